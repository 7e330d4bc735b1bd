"""A clip's media over the in-process app: thumbnails made at ingest, and segments cut
from the source without re-encoding."""

from __future__ import annotations

import io

import av
import pytest

QUESTION = "where does the red circle move?"


def _source_packets(path: str) -> tuple[str, set[bytes]]:
    with av.open(path) as container:
        stream = container.streams.video[0]
        return stream.codec_context.name, {bytes(p) for p in container.demux(stream) if p.size}


def _kept(media_db) -> str:
    return next(v for v in media_db.videos if v != media_db.gone)


def test_thumbnail_is_a_cached_jpeg_and_a_json_404_when_absent(media_db):
    client, read = media_db.service.client, media_db.service.read
    video_id = _kept(media_db)
    response = client.get(f"/v1/clips/{video_id}/1/thumbnail.jpg", headers=read)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    assert "max-age" in response.headers["cache-control"]
    with av.open(io.BytesIO(response.content)) as container:
        frame = next(container.decode(video=0))
    assert (frame.width, frame.height) == (160, 120)  # from the 320x240 source, not 64 px
    for path, code in (
        (f"/v1/clips/{video_id}/99/thumbnail.jpg", "thumbnail_not_found"),
        ("/v1/clips/nope/0/thumbnail.jpg", "clip_not_found"),
    ):
        missing = client.get(path, headers=read)
        assert missing.status_code == 404 and missing.json()["error"]["code"] == code
    assert client.get(f"/v1/clips/{video_id}/1/thumbnail.jpg").status_code == 401


def test_segment_is_the_clip_copied_from_its_source(media_db):
    client, read = media_db.service.client, media_db.service.read
    video_id = _kept(media_db)
    clip = media_db.stage.store.scan(
        f"video_id = '{video_id}' AND clip_index = 1", ["t_start", "t_end"]
    ).to_pylist()[0]
    response = client.get(f"/v1/clips/{video_id}/1/segment.mp4", headers=read)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "video/mp4"
    codec, source = _source_packets(media_db.videos[video_id])
    with av.open(io.BytesIO(response.content)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == codec
        packets = [bytes(p) for p in container.demux(stream) if p.size]
    with av.open(io.BytesIO(response.content)) as container:
        frames = [f.time for f in container.decode(video=0)]
    assert packets and all(p in source for p in packets)  # copied, not re-encoded
    length = clip["t_end"] - clip["t_start"]  # 4 s; starts at the keyframe at/before (1 s GOPs)
    assert length - 0.1 <= frames[-1] - frames[0] + 1 / 30 <= length + 1.0 + 0.1
    assert frames[0] == pytest.approx(0.0)


def test_segment_of_a_source_gone_is_410_without_server_paths(media_db):
    client, read = media_db.service.client, media_db.service.read
    response = client.get(f"/v1/clips/{media_db.gone}/0/segment.mp4", headers=read)
    assert response.status_code == 410
    assert response.json()["error"]["code"] == "source_gone"
    assert "/" not in response.json()["error"]["message"]
    missing = client.get(f"/v1/clips/{media_db.gone}/9/segment.mp4", headers=read)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "clip_not_found"


def test_search_results_link_their_thumbnail_and_segment(media_db):
    client, read = media_db.service.client, media_db.service.read
    body = client.post("/v1/search", json={"question": QUESTION}, headers=read).json()
    clip = body["videos"][0]["clips"][0]
    assert clip["segment_url"].endswith(f"/{clip['clip_index']}/segment.mp4")
    assert client.get(clip["thumbnail_url"], headers=read).status_code == 200


def test_a_codec_mp4_cannot_carry_is_re_encoded_to_h264(tmp_path):
    import numpy as np

    from service.media import cut_segment

    path = str(tmp_path / "lossless.avi")
    with av.open(path, "w") as out:  # HuffYUV: MP4 has no tag for it
        stream = out.add_stream("huffyuv", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "rgb24"
        for i in range(50):
            image = np.full((48, 64, 3), i * 5, np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode(None))
    data = cut_segment(path, 1.0, 3.0)
    with av.open(io.BytesIO(data)) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        times = [frame.time for frame in container.decode(video=0)]
    assert len(times) == 20 and times[0] == 0.0  # 1.0 .. 3.0 s at 10 fps
