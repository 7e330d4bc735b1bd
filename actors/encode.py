"""Streaming memory encoding, batched across videos.

One video is sequential (clip t needs memory(t-1)), so throughput comes from encoding
clip t of many videos in one forward pass, each row with its own carried memory. The stage
keeps the carried memory of every video it is encoding; the driver sends each video's
clips in order to the same actor (Ray runs one caller's calls to an actor in order).
A step that raises fails its videos only: their clips in the steps queued behind it are
skipped until the driver releases them, so the steps of other videos go on.

A restarted actor (Ray restarts a lost one) comes back without any carried memory: a clip
past the first of a video it never saw raises ``CarriedMemoryLost``, which tells the
driver to start that encoder's videos again rather than fail them.
"""

from __future__ import annotations

import numpy as np
import torch

from checkpoints.registry import load_model
from models.select import archive_keys
from schemas.records import Clip, MemoryRecord


class CarriedMemoryLost(RuntimeError):
    """A video's next clip arrived at an encoder that does not hold its memory (restarted)."""


class EncodeStage:
    """Encodes clip batches of many videos with the memory model (the Ray actor wraps it)."""

    def __init__(
        self,
        checkpoint: str,
        device: str | None = None,
        threads: int | None = None,
        propagate_memory: bool = True,
    ):
        self.checkpoint = checkpoint
        self.propagate_memory = propagate_memory  # False: every clip starts from scratch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.threads = threads
        self.model = None
        self._memory: dict[str, torch.Tensor] = {}  # video_id -> (M, D) carried memory
        self._next_clip: dict[str, int] = {}  # video_id -> clip index expected next
        self._failed: set[str] = set()  # videos of a step that raised, until released

    def setup(self) -> None:
        """Load the weights (inside the actor, not on the driver)."""
        if self.model is None:
            if self.threads:
                torch.set_num_threads(self.threads)
            self.model = load_model(self.checkpoint, device=self.device)

    def encode_step(self, clips: list[Clip]) -> list[MemoryRecord]:
        """Encode one clip of each of several videos (clips of failed videos are skipped)."""
        self.setup()
        clips = [clip for clip in clips if clip.video_id not in self._failed]
        if not clips:
            return []
        try:
            return self._encode(clips)
        except Exception:
            self._failed.update(clip.video_id for clip in clips)
            raise

    def release(self, video_ids) -> None:
        """Drop the carried memory of videos that ended (or failed)."""
        for video_id in video_ids:
            self._memory.pop(video_id, None)
            self._next_clip.pop(video_id, None)
            self._failed.discard(video_id)

    def _encode(self, clips: list[Clip]) -> list[MemoryRecord]:
        ids = [clip.video_id for clip in clips]
        if len(set(ids)) != len(ids):
            raise ValueError("an encode step takes at most one clip per video")
        unknown = [c for c in clips if c.clip_index > 0 and c.video_id not in self._next_clip]
        if unknown:
            raise CarriedMemoryLost(
                f"encoder holds no memory of video {unknown[0].video_id} at clip "
                f"{unknown[0].clip_index} (it was restarted)"
            )
        for clip in clips:
            expected = self._next_clip.get(clip.video_id, 0)
            if clip.clip_index != expected:
                raise ValueError(
                    f"video {clip.video_id}: got clip {clip.clip_index}, expected {expected}"
                )
        with torch.inference_mode():
            frames = torch.from_numpy(np.stack([c.frames for c in clips])).to(self.device)
            reset = torch.tensor(
                [c.clip_index == 0 or not self.propagate_memory for c in clips],
                device=self.device,
            )
            prev = self._previous_memory(clips)  # (B, M, D)
            memory, indicator = self.model.encode_clips(frames, prev, reset=reset)
        memory_np = memory.float().cpu().numpy()
        keys = archive_keys(indicator.float().cpu().numpy(), self.model.indicator_dim)
        records = []
        for row, clip in enumerate(clips):
            self._memory[clip.video_id] = memory[row]
            self._next_clip[clip.video_id] = clip.clip_index + 1
            records.append(
                MemoryRecord(
                    video_id=clip.video_id,
                    clip_index=clip.clip_index,
                    t_start=clip.t_start,
                    t_end=clip.t_end,
                    archive_key=keys[row],
                    memory=memory_np[row],
                    thumbnail=clip.thumbnail,
                )
            )
        return records

    def _previous_memory(self, clips: list[Clip]) -> torch.Tensor:
        """(B, M, D): the carried memory per row; zeros where the row starts a video."""
        m, d = self.model.memory_tokens, self.model.hidden_size
        rows = [self._memory.get(c.video_id, torch.zeros(m, d, device=self.device)) for c in clips]
        return torch.stack(rows)


def make_encode_actor(use_gpu: bool, max_restarts: int = 0):
    """The Ray actor class: one GPU when there is one, half a CPU otherwise.

    Ray restarts a lost actor up to ``max_restarts`` times and replays the calls the loss
    cut (or that came while it restarted) on the new one: a step holding clip 0 of its
    videos encodes as before; one past clip 0 raises ``CarriedMemoryLost`` (the memory is
    gone), and the driver starts that encoder's videos again."""
    import ray  # here, so that the stage itself runs without Ray

    resources = {"num_gpus": 1, "num_cpus": 1} if use_gpu else {"num_cpus": 0.5}
    retries = {"max_restarts": max_restarts, "max_task_retries": max_restarts}
    return ray.remote(**resources, **retries)(EncodeStage)
