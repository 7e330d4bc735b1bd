"""Arrow schemas of the LanceDB tables.

``memories``: one row per clip, key (video_id, clip_index, encoder).
``videos``: the catalog and ingest ledger, key video_id.
``video_encoders``: per-encoder ingest state of each video, key (video_id, encoder).
``thumbnails``: one JPEG per clip, key (video_id, clip_index), any encoder.
No float16 columns anywhere (DuckDB cannot read them): tokens are int8 + float32 scales.
"""

from __future__ import annotations

import pyarrow as pa

MEMORIES = "memories"
VIDEOS = "videos"
MEMORY_KEY = ["video_id", "clip_index", "encoder"]
VIDEO_KEY = ["video_id"]
VIDEO_ENCODERS = "video_encoders"
VIDEO_ENCODER_KEY = ["video_id", "encoder"]

# Columns users may filter on / select in SQL, besides the vector and token columns.
METADATA_FIELDS = [
    pa.field("archive", pa.string()),
    pa.field("recorded_at", pa.timestamp("us", tz="UTC")),
    pa.field("tags", pa.list_(pa.string())),
]


def memories_schema(key_width: int, memory_tokens: int, hidden: int) -> pa.Schema:
    """Schema of ``memories`` for an encoder with archive keys of ``key_width`` floats and
    (M, D) memories. The clip indicators the video stage scores are not stored: the model
    reads them back from the memory (``StreamingMemoryEncoder.indicators``)."""
    return pa.schema(
        [
            pa.field("video_id", pa.string(), nullable=False),
            pa.field("clip_index", pa.int32(), nullable=False),
            pa.field("encoder", pa.string(), nullable=False),
            pa.field("uri", pa.string()),
            pa.field("t_start", pa.float32()),
            pa.field("t_end", pa.float32()),
            # the archive stage's ANN key: the mean token indicator lifted to the unit sphere
            pa.field("archive_key", pa.list_(pa.float32(), key_width)),
            # memory tokens, row-major (M, D), int8 with one float32 scale per token
            pa.field("memory", pa.list_(pa.int8(), memory_tokens * hidden)),
            pa.field("memory_scale", pa.list_(pa.float32(), memory_tokens)),
            *METADATA_FIELDS,
        ]
    )


VIDEOS_SCHEMA = pa.schema(
    [
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("uri", pa.string()),
        pa.field("archive", pa.string()),
        pa.field("size", pa.int64()),
        pa.field("etag", pa.string()),
        pa.field("duration_s", pa.float64()),
        pa.field("fps", pa.float64()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("codec", pa.string()),
        pa.field("status", pa.string()),  # "done" | "failed" | "deleted" (gone from the source)
        pa.field("error", pa.string()),  # "<kind>: <message>" for failed videos
        pa.field("encoder", pa.string()),
        pa.field("n_clips", pa.int32()),
        pa.field("attempts", pa.int32()),
        pa.field("recorded_at", pa.timestamp("us", tz="UTC")),
        pa.field("tags", pa.list_(pa.string())),
        pa.field("created_at", pa.timestamp("us", tz="UTC")),
        pa.field("updated_at", pa.timestamp("us", tz="UTC")),
    ]
)

# What each encoder made of each video, so that switching back to an encoder re-encodes only
# the videos that changed since it last ingested them (storage.encoders.EncoderLedger).
VIDEO_ENCODERS_SCHEMA = pa.schema(
    [
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("encoder", pa.string(), nullable=False),
        pa.field("size", pa.int64()),  # the video's size and etag when this encoder ingested it
        pa.field("etag", pa.string()),
        pa.field("status", pa.string()),  # "done" | "failed"
        pa.field("n_clips", pa.int32()),
        pa.field("updated_at", pa.timestamp("us", tz="UTC")),
    ]
)

# One small JPEG per clip, made at ingest from a decoded frame (decode.thumbnails): beside
# the memories, not in them, so scans of memories stay lean; the same for every encoder.
THUMBNAILS = "thumbnails"
THUMBNAIL_KEY = ["video_id", "clip_index"]
THUMBNAILS_SCHEMA = pa.schema(
    [
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("clip_index", pa.int32(), nullable=False),
        pa.field("jpeg", pa.binary()),
    ]
)

# Columns that SQL may reference, per table (the big token columns are not selectable).
SQL_COLUMNS = {
    MEMORIES: [
        "video_id",
        "clip_index",
        "encoder",
        "uri",
        "t_start",
        "t_end",
        "archive",
        "recorded_at",
        "tags",
    ],
    VIDEOS: [f.name for f in VIDEOS_SCHEMA],
}
