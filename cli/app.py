"""The ``vmem`` command line: starts the flows and prints their results."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console

from cli import views
from cli.options import PIPELINE_OPTIONS, RunOptions, shared_options
from schemas.config import ConfigError, VMemConfig, describe, section_fields
from schemas.eval_config import EvalConfig
from schemas.settings import quiet_third_party
from schemas.train_config import TrainConfig

app = typer.Typer(add_completion=False, no_args_is_help=True)
console = Console()
err = Console(stderr=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="one JSON object per line")]
AsOfOpt = Annotated[
    str | None,
    typer.Option(
        "--as-of",
        help="read the memories and catalog as of a memories-table VERSION, TAG or ISO "
        "TIMESTAMP (UTC unless zoned); `vmem versions` lists them",
    ),
]
_DEFAULT_OUT = TrainConfig.model_fields["out_dir"].default


def _eval(field: str) -> str:
    """The default of an EvalConfig field, as ``--help`` shows it."""
    return str(EvalConfig.model_fields[field].default)


def _given(flags: dict) -> dict:
    """The flags the user gave (None: not given, the config file or the default decides)."""
    return {k: v for k, v in flags.items() if v is not None}


@app.callback(help=__doc__)
def entry() -> None:
    """Runs before every command, before Prefect or Ray is imported (the commands import
    them lazily): quieter defaults for the third-party libraries (schemas.settings)."""
    quiet_third_party()


def _config(opts: RunOptions) -> VMemConfig:
    """The config file (or the defaults) with the command line's overrides, or a clear error."""
    try:
        cfg = opts.pipeline_config()
    except ConfigError as exc:
        _fail(str(exc))
    _check_db_path(cfg)
    return cfg


# ---- the operator's mistakes, each one line (exit 2) before anything starts ---------------
def _check_db_path(cfg: VMemConfig) -> None:
    """A local database must be a folder (or not exist yet, for ingest to create)."""
    from storage.uri import is_s3

    db = cfg.storage.db
    if not is_s3(db) and Path(db).expanduser().exists() and not Path(db).expanduser().is_dir():
        _fail(f"the database {db} is a file, not a database folder (--db, $VMEM_DB, storage.db)")


def _require_memories(cfg: VMemConfig) -> None:
    """Reading commands need a database that exists and holds memories."""
    from storage.db import StorageError, connect, open_table
    from storage.uri import is_s3

    db = cfg.storage.db
    if not is_s3(db) and not Path(db).expanduser().is_dir():
        _fail(f"no database at {db}: give --db (or $VMEM_DB), or run `vmem ingest SOURCE` first")
    try:
        empty = open_table(connect(cfg.storage), "memories") is None
    except StorageError:
        return  # unreachable: the command's own storage handling says so
    if empty:
        _fail(f"the database {db} holds no memories yet: run `vmem ingest SOURCE --db {db}`")


def _check_source(source: str, cfg: VMemConfig) -> None:
    """A local source must exist (s3:// sources are checked by listing them), and on a Ray
    cluster of several nodes be mounted on all of them (actors.runtime.check_local_sources)."""
    from storage.uri import is_s3

    if is_s3(source):
        return
    if not Path(source).expanduser().exists():
        _fail(f"source folder not found: {source}")
    if cfg.ray.address:
        from actors.runtime import check_local_sources, ensure_ray
        from storage.archive import ArchiveError

        ensure_ray(cfg.ray)
        try:
            check_local_sources([source], cfg.ray)
        except ArchiveError as exc:
            _fail(str(exc))


def _check_question(question: str, k: int | None) -> None:
    if not question.strip():
        _fail('the question is empty: ask something, e.g. vmem ask "where is the red car?"')
    if k is not None and k < 1:
        _fail(f"-k {k}: clips selected per video must be at least 1")


def _bind(cfg: VMemConfig):
    """The run's model (composed and cached on first use), bound once here so that a bad
    model or part is one clear error; the flows take it as their ``bound`` parameter."""
    from actors.runtime import bind_model

    try:
        return bind_model(cfg)
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))


def _archive(cfg: VMemConfig):
    """The Python API's Archive over the configured database (client.archive: reached,
    the model bound, memories there), or its one-line error with its exit code."""
    from client import VMemError
    from client.archive import Archive

    try:
        return Archive.from_config(cfg)
    except VMemError as exc:
        _fail(str(exc), exc.exit_code)


def _as_of(cfg: VMemConfig, as_of: str | None) -> VMemConfig:
    """The config reading the database as of ``as_of``, checked here so that a point that
    does not exist is one clear line (the query stage resolves it again where it runs)."""
    if as_of is None:
        return cfg
    from storage.db import StorageError
    from storage.memories import MemoryStore

    try:
        MemoryStore(cfg.storage, as_of=as_of).table  # noqa: B018 - resolves and checks out
    except StorageError as exc:
        _fail(str(exc))
    return cfg.with_overrides(query={"as_of": as_of})


EXIT_USAGE, EXIT_NEW_FAILURES = 2, 3  # `vmem ingest --help` documents them


def _warn(message: str) -> None:
    from rich.markup import escape

    err.print(f"[bold yellow]warning:[/] {escape(message)}", soft_wrap=True)


def _fail(message: str, code: int = EXIT_USAGE):
    err.print(f"[bold red]error:[/] {message}", soft_wrap=True)  # one line, however long
    raise typer.Exit(code)


# ---- storage failures (object storage down, the writer lease) ----------------------------
EXIT_STORAGE = 4  # the database could not be reached or written; nothing committed is lost
EXIT_WRITER_BUSY = 75  # another writer held the database's writer lease (EX_TEMPFAIL: retry)


@contextmanager
def _storage_errors(cfg: VMemConfig) -> Iterator[None]:
    """Storage failures as one line with their exit code, credentials redacted: an endpoint
    that cannot be reached (after the bounded retries of storage.uri.RETRY_DEFAULTS), a
    missing bucket, refused keys, a writer lease held by another run or lost."""
    from storage.db import StorageError
    from storage.lease import LeaseError, WriterBusy
    from storage.uri import ObjectStoreError, object_store_message, redact

    options = cfg.storage.storage_options
    try:
        yield
    except typer.Exit:
        raise
    except WriterBusy as exc:
        _fail(redact(str(exc), options), EXIT_WRITER_BUSY)
    except (StorageError, LeaseError, ObjectStoreError) as exc:
        _fail(redact(str(exc), options), EXIT_STORAGE)
    except (ValueError, OSError, RuntimeError) as exc:  # LanceDB's object-store errors
        message = object_store_message(exc, cfg.storage.db, options)
        if message is None:
            raise
        _fail(message, EXIT_STORAGE)


def _preflight(cfg: VMemConfig, source: str | None = None) -> None:
    """Reach the database (and an s3:// source) before a flow starts, so that an endpoint
    that is down is one line here rather than a failed flow run's traceback."""
    from storage.db import connect
    from storage.uri import ObjectStoreError, is_s3, probe_s3

    if is_s3(cfg.storage.db):
        connect(cfg.storage)
    if source is not None and is_s3(source):
        try:
            probe_s3(source, cfg.storage.storage_options)
        except ObjectStoreError as exc:  # a source that cannot be listed: exit 2, as a folder
            _fail(str(exc))


@app.command()
@shared_options(*PIPELINE_OPTIONS)
def ingest(
    source: Annotated[str, typer.Argument(help="folder (recursive) or s3://bucket/prefix")],
    opts: RunOptions,
    retry_failed: Annotated[bool, typer.Option(help="retry videos that failed before")] = False,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            help="serve the run's Prometheus metrics on 127.0.0.1:PORT (flows/metrics.py)",
            min=1,
            max=65535,
        ),
    ] = None,
    pushgateway: Annotated[
        str | None,
        typer.Option(help="push the run's metrics to this Prometheus Pushgateway at the end"),
    ] = None,
):
    """Decode and encode every new or changed video of SOURCE into memories.

    Exit status, for schedulers:

    0  every listed video is done or unchanged. A video that failed in an
       earlier run and has not changed since is counted "failed before",
       not tried again, and does not fail the run (--retry-failed tries it).

    3  one or more videos newly failed in this run: the summary and the
       Prefect artifact list them, and the Prefect flow run ends Failed.

    2  usage error: a bad option, config or model, or a source that cannot
       be listed.

    4  the database could not be reached or written (object storage down
       after bounded retries, or the writer lease lost); what was committed
       stays; run again.

    75 another run held the database's writer lease for longer than
       storage.writer_wait_s (one writer per database; a second run waits).
    """
    from flows.ingest import run_ingest
    from flows.metrics import MetricsError, collect
    from flows.progress import startup
    from storage.archive import ArchiveError

    cfg = _config(opts)
    try:
        with startup(err), collect(metrics_port, pushgateway, warn=_warn):
            bound = _bind(cfg)
            _check_source(source, cfg)
            with _storage_errors(cfg):
                _preflight(cfg, source)
                report = run_ingest(source, cfg, retry_failed, bound=bound)
    except ArchiveError as exc:
        _fail(str(exc))
    except MetricsError as exc:
        _fail(str(exc))
    views.print_ingest_report(console, report)
    if report.failed:
        raise typer.Exit(EXIT_NEW_FAILURES)


@app.command()
@shared_options("db", "config")
def status(
    opts: RunOptions,
    only: Annotated[
        views.VideoStatus | None,
        typer.Option("--status", help="list only the videos in this state (totals: all)"),
    ] = None,
    json_out: JsonOpt = False,
):
    """The catalog: every video, its status and error, and the totals per status."""
    from storage.catalog import Catalog
    from storage.memories import MemoryStore
    from storage.uri import is_s3

    cfg = _config(opts)
    db = cfg.storage.db
    if not is_s3(db) and not Path(db).expanduser().is_dir():
        _fail(f"no database at {db}: give --db (or $VMEM_DB), or run `vmem ingest SOURCE` first")
    with _storage_errors(cfg):
        rows = Catalog(MemoryStore(cfg.storage)).all().to_pylist()
    views.print_status(console, rows, json_out, only=only and only.value)


@app.command()
@shared_options(*PIPELINE_OPTIONS)
def ask(
    question: str,
    opts: RunOptions,
    where: Annotated[str | None, typer.Option(help="SQL predicate pre-filter")] = None,
    k: Annotated[int | None, typer.Option("-k", help="clips selected per video")] = None,
    answer: Annotated[
        bool, typer.Option("--answer", help="generate an answer (needs a trained model)")
    ] = False,
    as_of: AsOfOpt = None,
    json_out: JsonOpt = False,
):
    """The memories selected for one question, in time order per video; with --answer
    the answer, once, above them."""
    from client import VMemError

    _check_question(question, k)
    cfg = _as_of(_config(opts), as_of)
    archive = _archive(cfg)
    try:
        result = archive.ask(question, where=where, k=k, answer=answer)
    except VMemError as exc:
        _fail(str(exc), exc.exit_code)
    views.print_selection(console, result, json_out)


@app.command()
@shared_options(*PIPELINE_OPTIONS)
def answer(
    questions: Annotated[
        str, typer.Argument(help='JSONL, one {"question": ...} per line: a path or s3://bucket/key')
    ],
    output: Annotated[Path, typer.Option("-o", "--output", help="results .parquet")],
    opts: RunOptions,
    generate: Annotated[
        bool, typer.Option("--generate", help="add generated answers (needs a trained model)")
    ] = False,
    as_of: AsOfOpt = None,
):
    """Answer a bulk batch of questions on the query actor pool; write Parquet."""
    from client import VMemError
    from client.archive import Archive

    cfg = _as_of(_config(opts), as_of)
    archive = Archive(cfg, _bind(cfg))  # the batch runs as the Python API's answer_batch
    try:
        report = archive.answer_batch(questions, str(output), generate)
    except VMemError as exc:
        _fail(str(exc), exc.exit_code)
    failed = ", ".join(report.failed_ids[:10]) + (", ..." if report.failed > 10 else "")
    console.print(
        f"{report.questions} questions: {report.answered} answered, "
        f"{report.no_match} matched no memory, {report.failed} failed"
        f"{f' ({failed})' if report.failed else ''}; "
        f"{report.rows} rows -> {report.output} ({report.wall_seconds:.1f} s)",
        markup=False,
        highlight=False,
    )


@app.command()
@shared_options(*PIPELINE_OPTIONS)
def sql(
    statement: Annotated[str, typer.Argument(help="SELECT ... FROM memories|videos ...")],
    opts: RunOptions,
    as_of: AsOfOpt = None,
    json_out: JsonOpt = False,
):
    """SQL-like search: ORDER BY relevance('question') ranks memories by fit; COUNT(*),
    GROUP BY and LIMIT n OFFSET m as the README's SQL subset says."""
    from client import VMemError

    cfg = _as_of(_config(opts), as_of)
    archive = _archive(cfg)
    try:
        table = archive.sql(statement)
    except VMemError as exc:
        _fail(str(exc), exc.exit_code)
    views.print_table(console, table.to_pylist(), json_out)


@app.command()
@shared_options(*PIPELINE_OPTIONS)
def serve(
    opts: RunOptions,
    host: Annotated[
        str | None, typer.Option(help="bind address (default service.host: 127.0.0.1)")
    ] = None,
    port: Annotated[int | None, typer.Option(help="TCP port (default service.port: 8000)")] = None,
):
    """Serve the search API on Ray Serve until Ctrl-C: /v1/search, /v1/sql, /v1/videos,
    /healthz, /metrics (OpenAPI at /v1/openapi.json). Requests need a key: `vmem keys create`."""
    from service.serve import serve_until_stopped

    cfg = _config(opts)
    with _storage_errors(cfg):
        _preflight(cfg)
    bound = _bind(cfg)
    _require_memories(cfg)
    serve_until_stopped(cfg, host or cfg.service.host, port or cfg.service.port, bound)


# ---- API keys of the search service (service.auth) ----------------------------------------
keys_app = typer.Typer(
    no_args_is_help=True, help="API keys of `vmem serve` (only hashes are stored)."
)
app.add_typer(keys_app, name="keys")


def _key_store(opts: RunOptions):
    from service.auth import KeyStore
    from storage.uri import is_s3

    cfg = _config(opts)
    db = cfg.storage.db
    if not is_s3(db) and not Path(db).expanduser().is_dir():
        _fail(f"no database at {db}: give --db (or $VMEM_DB), or run `vmem ingest SOURCE` first")
    with _storage_errors(cfg):
        _preflight(cfg)
        return cfg, KeyStore(cfg.storage)


@keys_app.command("create")
@shared_options("db", "config")
def keys_create(
    opts: RunOptions,
    scope: Annotated[
        str, typer.Option("--scope", help="read: search, sql, videos; write: batches too")
    ] = "read",
):
    """Make a key; it is printed once, alone on the last line (only its hash is kept)."""
    from service.auth import KeyStoreError

    cfg, store = _key_store(opts)
    try:
        with _storage_errors(cfg):
            new = store.create(scope)
    except KeyStoreError as exc:
        _fail(str(exc))
    err.print(f"created API key {new.key_id} (scope {new.scope}); it is not shown again:")
    print(new.key, flush=True)


@keys_app.command("revoke")
@shared_options("db", "config")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="the key's id (vmem keys list)")],
    opts: RunOptions,
):
    """Revoke a key: replicas refuse it within service.keys_refresh_s seconds."""
    from service.auth import KeyStoreError

    cfg, store = _key_store(opts)
    try:
        with _storage_errors(cfg):
            store.revoke(key_id)
    except KeyStoreError as exc:
        _fail(str(exc))
    console.print(f"revoked API key {key_id}", markup=False, highlight=False)


@keys_app.command("list")
@shared_options("db", "config")
def keys_list(opts: RunOptions, json_out: JsonOpt = False):
    """Every key's id, scope, and when it was made and revoked (never the key itself)."""
    cfg, store = _key_store(opts)
    with _storage_errors(cfg):
        rows = store.list()
    views.print_table(console, rows, json_out)


@app.command()
@shared_options("config")
def train(
    *,
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="checkpoint directory", show_default=_DEFAULT_OUT),
    ] = None,
    opts: RunOptions,
    base: Annotated[str | None, typer.Option(help="VMem checkpoint to fine-tune")] = None,
    steps: Annotated[int | None, typer.Option(help="training steps")] = None,
    smoke: Annotated[bool, typer.Option(help="the tiny smoke config (under a minute)")] = False,
    bundle: Annotated[
        Path | None,
        typer.Option(
            help="also export the result as a trained-default bundle into this folder "
            "(checkpoints/default is the committed default; see checkpoints/bundle.py)"
        ),
    ] = None,
):
    """Train the memory model on the procedural video world; writes an HF checkpoint.

    Reads the config file's train: section (or a flat train_config.json a run saved);
    the flags override it."""
    import logging

    from flows.train import train_flow

    logging.getLogger("prefect.flow_runs").setLevel(logging.INFO)  # the run's progress lines

    flags = {"out_dir": output and str(output), "base": base, "steps": steps}
    try:
        fields = {**section_fields(opts.config_file(), "train"), **_given(flags)}
        cfg = (
            TrainConfig.smoke(**{"out_dir": _DEFAULT_OUT, **fields})
            if smoke
            else TrainConfig(**fields)
        )
    except ConfigError as exc:
        _fail(str(exc))
    except ValidationError as exc:
        _fail(f"invalid training config: {describe(exc)}")
    checkpoint = train_flow(cfg)
    console.print(f"trained checkpoint: {checkpoint} (use it with --model {checkpoint})")
    if bundle is not None:
        from checkpoints.bundle import export_bundle

        try:
            console.print(f"bundle: {export_bundle(checkpoint, bundle)}")
        except ValueError as exc:
            _fail(str(exc))


@app.command(name="eval")
@shared_options("config", "model")
def evaluate(
    *,
    seed: Annotated[
        int | None, typer.Option(help="first held-out world seed", show_default=_eval("seed"))
    ] = None,
    minutes: Annotated[
        float | None,
        typer.Option(help="length of each world video", show_default=_eval("minutes")),
    ] = None,
    videos: Annotated[
        int | None, typer.Option(help="held-out world videos", show_default=_eval("videos"))
    ] = None,
    opts: RunOptions,
    grid: Annotated[
        str | None, typer.Option(help="needle grid video lengths in minutes, e.g. 1,5,15,30,60")
    ] = None,
    grid_videos: Annotated[
        int | None,
        typer.Option(
            help="needle videos per grid cell (different worlds)",
            show_default=_eval("grid_videos"),
        ),
    ] = None,
    no_ablations: Annotated[bool, typer.Option(help="skip ablations (a) and (b)")] = False,
    workdir: Annotated[
        Path | None,
        typer.Option(help="videos, databases, grid files", show_default=_eval("workdir")),
    ] = None,
    json_out: JsonOpt = False,
):
    """Evaluate a model on held-out procedural worlds through the real pipeline.

    Reads the config file's eval: section; the flags override it."""
    import json
    import math

    from flows.eval import eval_flow

    flags = {
        "model": opts.model,
        "seed": seed,
        "minutes": minutes,
        "videos": videos,
        "workdir": workdir and str(workdir),
        "ablations": False if no_ablations else None,
        "grid_videos": grid_videos,
    }
    try:
        if grid:
            flags["grid_minutes"] = [float(v) for v in grid.split(",")]
        cfg = EvalConfig(**{**section_fields(opts.config_file(), "eval"), **_given(flags)})
    except ConfigError as exc:
        _fail(str(exc))
    except ValidationError as exc:
        _fail(f"invalid evaluation settings: {describe(exc)}")
    except ValueError as exc:  # a --grid length that is not a number
        _fail(f"invalid evaluation settings: {exc}")
    report = eval_flow(cfg)

    def clean(value):
        if isinstance(value, float) and math.isnan(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    report = clean(report)
    if json_out:
        print(json.dumps(report))
        return
    views.print_eval_report(console, report)


@app.command()
@shared_options("db", "config", "model")
def demo(
    *,
    workdir: Annotated[Path, typer.Option(help="where the sample archive is written")] = Path(
        "vmem-demo"
    ),
    opts: RunOptions,
    json_out: JsonOpt = False,
):
    """Write demo world videos (and two broken files), ingest them, ask each video questions
    made from its ground truth, and print the model's answers beside the truth."""
    import json

    from cli.demo import run_demo

    cfg = _config(replace(opts, db=opts.db or str(workdir / "db")))
    summary = run_demo(workdir, _bind(cfg), console)
    if json_out:
        print(json.dumps(summary))


# ---- encoders and versions ---------------------------------------------------------------
def _current_encoder(cfg: VMemConfig) -> str | None:
    """The encoder id the configured model writes (None when it cannot be bound here)."""
    from actors.runtime import bind_model

    try:
        return bind_model(cfg).encoder
    except (ValueError, FileNotFoundError, OSError):
        return None


@app.command()
@shared_options(*PIPELINE_OPTIONS)
def encoders(opts: RunOptions, json_out: JsonOpt = False):
    """Every encoder whose memories the database holds: videos, clips, bytes (estimated).

    The model options say which one is current (the one `vmem ingest` would write)."""
    from storage.db import StorageError
    from storage.encoders import encoder_summary
    from storage.memories import MemoryStore

    cfg = _config(opts)
    try:
        rows = encoder_summary(MemoryStore(cfg.storage))
    except StorageError as exc:
        _fail(str(exc))
    views.print_encoders(console, rows, _current_encoder(cfg), json_out)


@app.command()
@shared_options(*PIPELINE_OPTIONS)
def prune(
    opts: RunOptions,
    encoder: Annotated[
        str | None, typer.Option("--encoder", help="the encoder id to remove (vmem encoders)")
    ] = None,
    keep_latest: Annotated[
        bool, typer.Option("--keep-latest", help="remove every encoder but the current model's")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="allow removing the current model's encoder")
    ] = False,
):
    """Remove an encoder's memories and ledger entries (its videos are encoded again if it
    comes back). `vmem maintain` then reclaims the space."""
    from storage.db import StorageError
    from storage.encoders import encoder_summary, prune_encoder
    from storage.memories import MemoryStore

    if (encoder is None) == (not keep_latest):
        _fail("give either --encoder ID or --keep-latest")
    cfg = _config(opts)
    current = _bind(cfg).encoder
    store = MemoryStore(cfg.storage)
    try:
        if keep_latest:
            targets = [r["encoder"] for r in encoder_summary(store) if r["encoder"] != current]
        else:
            targets = [encoder]
        if encoder == current and not force:
            _fail(f"{encoder} is the current model's encoder: add --force to remove it anyway")
        if not targets:
            console.print(f"nothing to prune: only the current encoder {current}", soft_wrap=True)
        for target in targets:
            clips, entries = prune_encoder(store, target)
            line = f"pruned {target}: {clips:,} clips, {entries:,} ledger entries"
            console.print(line, soft_wrap=True)  # one line per action, however long
    except StorageError as exc:
        _fail(str(exc))


@app.command()
@shared_options("db", "config")
def maintain(
    opts: RunOptions,
    keep_days: Annotated[
        float | None,
        typer.Option(
            "--keep-days",
            min=0,
            help="remove versions older than this many days (default storage.keep_versions_days)",
        ),
    ] = None,
):
    """Compact the tables, remove old versions, refresh the indexes (the vmem-maintain flow)."""
    from flows.maintain import maintain_flow

    cfg = _config(opts).with_overrides(storage={"keep_versions_days": keep_days})
    for line in maintain_flow(cfg):
        console.print(line, soft_wrap=True)


@app.command()
@shared_options("db", "config")
def versions(
    opts: RunOptions,
    last: Annotated[int, typer.Option("--last", "-n", min=1, help="newest versions shown")] = 20,
    json_out: JsonOpt = False,
):
    """Versions of the memories table and their tags (what --as-of takes)."""
    from storage.db import StorageError
    from storage.memories import MemoryStore
    from storage.versions import version_rows

    cfg = _config(opts)
    try:
        rows = version_rows(MemoryStore(cfg.storage).table)
    except StorageError as exc:
        _fail(str(exc))
    views.print_versions(console, rows[:last], len(rows), json_out)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
