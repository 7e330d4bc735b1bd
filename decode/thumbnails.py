"""Small JPEG thumbnails of decoded frames, with PyAV's MJPEG encoder (no Pillow).

One per clip, made at ingest from a frame the sampler has already decoded at full size
(its middle sampled frame), so a thumbnail costs one small resize and one JPEG encode per
clip, and never a second decode.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

import av
import numpy as np
from av.video.reformatter import VideoReformatter

THUMBNAIL_LONG_SIDE = 160  # pixels on the long side
THUMBNAIL_QSCALE = 6  # MJPEG quantiser (2 best .. 31 worst): about JPEG quality 70


def thumbnail_size(
    width: int, height: int, long_side: int = THUMBNAIL_LONG_SIDE
) -> tuple[int, int]:
    """(w, h) of a thumbnail: ``long_side`` on the longer side, even sizes, aspect kept."""
    scale = long_side / max(width, height, 1)
    w = max(2, round(width * scale / 2) * 2)
    h = max(2, round(height * scale / 2) * 2)
    return w, h


def _jpeg_codec(w: int, h: int, qscale: int) -> av.VideoCodecContext:
    codec = av.CodecContext.create("mjpeg", "w")
    codec.width, codec.height, codec.pix_fmt = w, h, "yuvj420p"
    codec.time_base = Fraction(1, 25)
    codec.qmin = codec.qmax = qscale  # a fixed quantiser: the size stays small and steady
    codec.open()
    return codec


def encode_jpeg(rgb: np.ndarray, qscale: int = THUMBNAIL_QSCALE) -> bytes:
    """JPEG bytes of an (H, W, 3) uint8 RGB image."""
    h, w = rgb.shape[:2]
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    return _encode(_jpeg_codec(w, h, qscale), frame.reformat(format="yuvj420p"))


def _encode(codec: av.VideoCodecContext, frame: av.VideoFrame, pts: int = 0) -> bytes:
    """One intra-only MJPEG frame: its packet comes out at once (no flush, so the context
    can be used again, with a growing ``pts``)."""
    frame.pts, frame.time_base = pts, codec.time_base  # the decoder's time base is not ours
    return b"".join(bytes(p) for p in codec.encode(frame))


@dataclass
class ThumbnailPlan:
    """Which samples get a thumbnail: sample k when ``k % every == at`` (the middle sample
    of each clip of ``every`` samples). The sampler fills ``made`` (sample index -> JPEG)."""

    every: int
    at: int
    long_side: int = THUMBNAIL_LONG_SIDE
    made: dict[int, bytes] = field(default_factory=dict)

    qscale: int = THUMBNAIL_QSCALE
    _codec: av.VideoCodecContext | None = field(default=None, repr=False)
    _encoded: int = 0
    _reformatter: VideoReformatter = field(default_factory=VideoReformatter, repr=False)

    def wants(self, k: int) -> bool:
        return k % self.every == self.at

    def make(self, frame: av.VideoFrame, turns: int = 0) -> bytes:
        """A JPEG of a decoded frame at thumbnail size, turned ``turns`` quarters
        counter-clockwise. The scaler and the encoder are kept from one clip to the next
        (they cost more to set up than to run)."""
        w, h = thumbnail_size(frame.width, frame.height, self.long_side)
        small = self._reformatter.reformat(frame, width=w, height=h, format="yuvj420p")
        if turns:
            rgb = self._reformatter.reformat(small, format="rgb24").to_ndarray()
            turned: np.ndarray = np.ascontiguousarray(np.rot90(rgb, turns))
            small = av.VideoFrame.from_ndarray(turned, format="rgb24").reformat(format="yuvj420p")
        codec = self._codec
        if codec is None or (codec.width, codec.height) != (small.width, small.height):
            codec = self._codec = _jpeg_codec(small.width, small.height, self.qscale)
        self._encoded += 1
        return _encode(codec, small, self._encoded)
