"""The one frozen config tree of VMem: the pipeline's sections, training, evaluation.

Parsed once (YAML/JSON file with sections, then CLI overrides), validated once, passed to
the flows as their parameter; the decode section is hashed into the ``encoder`` id stored on
every memory row. Environment variables enter only through ``schemas.settings``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    model_validator,
)

from schemas.eval_config import EvalConfig
from schemas.settings import VMemSettings
from schemas.train_config import TrainConfig


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DecodeConfig(_Frozen):
    sample_fps: float = Field(1.0, gt=0, description="frames sampled per second of video")
    clip_frames: int | None = Field(
        None, ge=1, description="T: sampled frames per clip; None takes the model's (paper: 16)"
    )
    frame_size: int | None = Field(
        None, ge=8, description="frames are resized to frame_size^2 RGB; None: the model's"
    )
    sampling: Literal["auto", "exact", "keyframe"] = Field(
        "auto",
        description="exact: the frame at each sample time; keyframe: nearest keyframes only; "
        "auto: keyframes when the GOP is no longer than the sample interval, else exact",
    )
    chunk_clips: int = Field(4, ge=1, description="clips per streamed chunk (memory bound)")


class ModelConfig(_Frozen):
    path: str | None = Field(
        None,
        description="VMem checkpoint dir; None: the trained default (checkpoints/default) "
        "(or the tiny random-weight default with untrained), or one composed from the parts below",
    )
    untrained: bool = Field(
        False,
        description="without path: the tiny default with random weights (seeded) instead of the "
        "trained default; for tests and benchmarks of the pipeline itself",
    )
    vision_model: str | None = Field(
        None, description="HF vision model dir (ViT, CLIP, SigLIP, ...): the frame encoder"
    )
    encoder_lm: str | None = Field(
        None, description="HF causal LM dir (Llama, Qwen2, Phi, GPT-2, ...): the memory encoder"
    )
    encoder_lm_layers: int | None = Field(
        None, ge=1, description="keep only the LM's first N layers (paper: 16 of Phi-2)"
    )
    question_model: str | None = Field(
        None,
        description="HF sentence encoder dir (BERT family, e.g. all-MiniLM-L6-v2), used frozen "
        "with its own tokenizer",
    )
    seed: int = Field(0, description="init seed of the tiny default model and composed layers")
    cache_dir: str = Field(
        "~/.cache/vmem/models",
        description="where the default (or composed) model is materialised once",
    )

    @model_validator(mode="after")
    def _path_or_parts(self) -> ModelConfig:
        parts = (self.vision_model, self.encoder_lm, self.question_model, self.encoder_lm_layers)
        if self.path is not None and any(part is not None for part in parts):
            raise ValueError(
                "model.path is a whole VMem checkpoint, while vision_model / encoder_lm / "
                "question_model compose one: give one or the other"
            )
        if self.encoder_lm_layers is not None and self.encoder_lm is None:
            raise ValueError("encoder_lm_layers keeps the first layers of encoder_lm: give both")
        return self


class EncodeConfig(_Frozen):
    batch_videos: int = Field(16, ge=1, description="videos encoded side by side per forward")
    num_actors: int = Field(1, ge=1, description="encode actors (one GPU each when present)")
    num_decoders: int = Field(2, ge=1, description="decode actors (CPU)")
    propagate_memory: bool = Field(
        True, description="carry memory(t-1) into clip t; False resets it (an ablation)"
    )
    decode_resources: dict[str, float] = Field(
        default_factory=dict,
        description="custom Ray resources each decode actor asks for, e.g. {decode: 1}: "
        "decoders go only to nodes that advertise them (ray start --resources)",
    )
    encode_resources: dict[str, float] = Field(
        default_factory=dict,
        description="custom Ray resources each encode actor asks for, e.g. {encode: 1}",
    )


class QueryConfig(_Frozen):
    top_k: int = Field(4, ge=1, description="K: clips selected per video (paper: 4)")
    candidates: int = Field(64, ge=1, description="archive-stage ANN candidates (clips)")
    max_videos: int = Field(3, ge=1, description="videos returned per question")
    nprobes: int = Field(40, ge=1, description="IVF partitions the archive stage searches")
    refine_factor: int | None = Field(
        None,
        ge=1,
        description="archive-stage PQ candidates re-ranked exactly, per result; None: "
        "enough to re-rank 320 (storage.memories.RERANK_ROWS)",
    )
    num_actors: int = Field(2, ge=1, description="query actors in the pool")
    as_of: str | None = Field(
        None,
        description="read the memories and catalog as of this memories-table version, tag "
        "or ISO timestamp (Lance time travel; `vmem versions` lists them); None: the latest",
    )


# storage_options keys that hold credentials. A JSON dump of the config (the parameters a
# Prefect flow run records, a config written out) shows them as "***"; storage.uri reads
# "***" as absent and takes the AWS_* environment instead (how a deployment gets its keys).
SECRET_OPTION_KEYS = frozenset(
    {
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
        "access_key_id",
        "secret_access_key",
        "session_token",
    }
)
REDACTED = "***"


class StorageConfig(_Frozen):
    db: str = Field(
        default_factory=lambda: VMemSettings().db,
        description="LanceDB URI (folder or s3://bucket/prefix); default $VMEM_DB or ./vmem-data",
    )
    storage_options: dict[str, str] = Field(
        default_factory=dict,
        description="object-store options (endpoint, keys, region; retries and timeouts: "
        "client_max_retries, client_retry_timeout, connect_timeout, timeout, defaults in "
        "storage.uri.RETRY_DEFAULTS, used by LanceDB and boto3 alike)",
    )
    commit_videos: int = Field(8, ge=1, description="videos per LanceDB commit")
    writer_lease_s: float = Field(
        60.0,
        gt=0,
        description="s3:// databases: the writer lease's expiry, renewed every third of it; "
        "how long a killed writer can block the next one (storage.lease)",
    )
    writer_wait_s: float = Field(
        3600.0,
        ge=0,
        description="how long a second writer (another `vmem ingest` into the same database) "
        "waits for the writer lease before it gives up with exit code 75; 0: at once",
    )

    keep_versions_days: float = Field(
        7.0,
        ge=0,
        description="`vmem maintain` removes table versions older than this many days, and "
        "the ingest-* tags on them except the newest (other tags keep their versions)",
    )

    @field_serializer("storage_options", when_used="json")
    def _redact_credentials(self, options: dict[str, str]) -> dict[str, str]:
        return {k: REDACTED if k.lower() in SECRET_OPTION_KEYS else v for k, v in options.items()}


class RayConfig(_Frozen):
    address: str | None = Field(None, description="None starts a local Ray on 127.0.0.1")
    num_cpus: int | None = Field(None, description="CPUs of the local Ray (None: all)")
    shared_local_paths: bool = Field(
        False,
        description="every node of the Ray cluster mounts local source folders at the same "
        "path (NFS, ...): allow them; otherwise a folder source on a cluster of several "
        "nodes is refused (its decoders may run where the folder is not)",
    )


class RetryConfig(_Frozen):
    """What an ingest run does about faults that are not a video's own."""

    task_retries: int = Field(
        2, ge=0, description="Prefect retries of the safe steps: listing, plan, index refresh"
    )
    task_retry_delay_s: float = Field(5.0, ge=0, description="seconds between those retries")
    actor_restarts: int = Field(
        3, ge=0, description="times Ray restarts a lost decode or encode actor in one run"
    )
    video_attempts: int = Field(
        3,
        ge=1,
        description="tries of one video when actors are lost under it (each from clip 0); "
        "a video whose own content fails is not tried again",
    )


class ServiceConfig(_Frozen):
    """The search service (`vmem serve`, service/): its Ray Serve deployment and limits."""

    host: str = Field("127.0.0.1", description="bind address of Serve's HTTP proxy (--host)")
    port: int = Field(8000, ge=1, le=65535, description="TCP port of the HTTP proxy (--port)")
    replicas: int = Field(
        1, ge=1, description="replicas (each holds one query stage) when autoscaling is off"
    )
    autoscale_min_replicas: int = Field(1, ge=0, description="autoscaling: fewest replicas")
    autoscale_max_replicas: int | None = Field(
        None, ge=1, description="autoscaling: most replicas; None: no autoscaling (`replicas`)"
    )
    target_ongoing_requests: float = Field(
        2.0, gt=0, description="autoscaling: requests in flight per replica it aims for"
    )
    replica_num_cpus: float = Field(1.0, ge=0, description="CPUs each replica reserves")
    replica_num_gpus: float = Field(0.0, ge=0, description="GPUs each replica reserves")
    max_ongoing_requests: int = Field(
        8, ge=1, description="requests one replica works on at once; more wait in its queue"
    )
    max_queued_requests: int = Field(
        64, ge=1, description="requests waiting per deployment; beyond it 503 with Retry-After"
    )
    retry_after_s: float = Field(
        1.0, ge=0, description="the Retry-After of a 503 sent when the queue is full"
    )
    body_limit_bytes: int = Field(
        1_048_576, ge=1024, description="largest request body; a larger one is refused (413)"
    )
    timeout_s: float = Field(
        30.0, gt=0, description="seconds one request may take before it is answered 504"
    )
    page_size: int = Field(
        100, ge=1, le=5_000, description="rows per page of /v1/sql and /v1/videos"
    )
    max_k: int = Field(32, ge=1, description="largest k (clips per video) /v1/search accepts")
    search_page_videos: int = Field(
        10, ge=1, description="videos per page of /v1/search (of query.max_videos selected)"
    )
    keys_refresh_s: float = Field(
        10.0, gt=0, description="how often a replica re-reads the api_keys table (revocations)"
    )
    max_batch_questions: int = Field(
        10_000, ge=1, description="most questions of one batch sent inline to /v1/batches"
    )
    max_batches_running: int = Field(
        2, ge=1, description="batches one replica runs at once; beyond it 429 with Retry-After"
    )
    batch_uri_prefixes: list[str] = Field(
        default_factory=list,
        description="folders or s3:// prefixes a batch's question file may come from (none: "
        "questions inline only; a write key must not read the server's files)",
    )


class VMemConfig(_Frozen):
    """The whole tree: one section per concern; ``train`` and ``eval`` are read only by
    ``vmem train`` and ``vmem eval``, the others by the pipeline commands."""

    decode: DecodeConfig = DecodeConfig()
    model: ModelConfig = ModelConfig()
    encode: EncodeConfig = EncodeConfig()
    query: QueryConfig = QueryConfig()
    storage: StorageConfig = Field(default_factory=StorageConfig)
    ray: RayConfig = RayConfig()
    retry: RetryConfig = RetryConfig()
    service: ServiceConfig = ServiceConfig()  # `vmem serve`
    train: TrainConfig = Field(default_factory=TrainConfig)  # `vmem train`
    eval: EvalConfig = Field(default_factory=EvalConfig)  # `vmem eval`

    def with_overrides(self, **sections: dict[str, Any]) -> VMemConfig:
        """A copy with some fields of some sections replaced (None values are ignored)."""
        data = self.model_dump()
        for section, values in sections.items():
            data[section].update({k: v for k, v in values.items() if v is not None})
        return VMemConfig.model_validate(data)

    def encoding_fingerprint(self) -> str:
        """Hash of everything that changes the stored memories besides the weights."""
        fields = self.decode.model_dump()
        if not self.encode.propagate_memory:
            fields["propagate_memory"] = False
        payload = json.dumps(fields, sort_keys=True).encode()
        return hashlib.sha256(payload).hexdigest()[:12]


class ConfigError(ValueError):
    """A config file that cannot be read, or a config that does not validate."""


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The raw mapping of a YAML or JSON config file (JSON is YAML too)."""
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"invalid config file {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"invalid config file {path}: expected a mapping of sections")
    return raw


def load_config(path: str | Path | None = None, **overrides: dict[str, Any]) -> VMemConfig:
    """The config file (or the defaults) with some fields of some sections replaced (the
    command line's flags; None values are ignored), validated once."""
    data = read_config_file(path) if path is not None else {}
    for section, values in overrides.items():
        given = {k: v for k, v in values.items() if v is not None}
        if given:
            data[section] = {**(data.get(section) or {}), **given}
    try:
        return VMemConfig.model_validate(data)
    except ValidationError as exc:
        where = f"config file {path}" if path is not None else "config"
        raise ConfigError(f"invalid {where}: {describe(exc)}") from exc


def section_fields(path: str | Path | None, section: str) -> dict[str, Any]:
    """The fields a config file sets in one section (the rest of the file validated too).

    A file without any section names is read as a ``train`` section of its own: the
    ``train_config.json`` a training run saves beside its checkpoint, or an older flat
    training config, reruns as it is."""
    if path is None:
        return {}
    data = read_config_file(path)
    if section == "train" and not data.keys() & VMemConfig.model_fields.keys():
        data = {"train": data}
    try:
        tree = VMemConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid config file {path}: {describe(exc)}") from exc
    return getattr(tree, section).model_dump(exclude_unset=True)


def describe(exc: ValidationError) -> str:
    """A validation error on one line: ``where: what`` per problem."""
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'config'}: {error['msg']}"
        for error in exc.errors()
    )
