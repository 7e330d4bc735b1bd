"""The ``vmem`` command line: starts the flows and prints their results."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console

from flows import views
from flows.options import PIPELINE_OPTIONS, RunOptions, shared_options
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
        return opts.pipeline_config()
    except ConfigError as exc:
        _fail(str(exc))


def _bind(cfg: VMemConfig):
    """The run's model (composed and cached on first use), bound once here so that a bad
    model or part is one clear error; the flows take it as their ``bound`` parameter."""
    from actors.runtime import bind_model

    try:
        return bind_model(cfg)
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))


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


def _fail(message: str, code: int = 2):
    err.print(f"[bold red]error:[/] {message}", soft_wrap=True)  # one line, however long
    raise typer.Exit(code)


@app.command()
@shared_options(*PIPELINE_OPTIONS)
def ingest(
    source: Annotated[str, typer.Argument(help="folder (recursive) or s3://bucket/prefix")],
    opts: RunOptions,
    retry_failed: Annotated[bool, typer.Option(help="retry videos that failed before")] = False,
):
    """Decode and encode every new or changed video of SOURCE into memories."""
    from flows.ingest import ingest_flow
    from storage.archive import ArchiveError

    cfg = _config(opts)
    bound = _bind(cfg)
    try:
        report = ingest_flow(source, cfg, retry_failed, bound=bound)
    except ArchiveError as exc:
        _fail(str(exc))
    views.print_ingest_report(console, report)


@app.command()
@shared_options("db", "config")
def status(opts: RunOptions, json_out: JsonOpt = False):
    """The catalog: every video, its status and error."""
    from storage.catalog import Catalog
    from storage.memories import MemoryStore

    cfg = _config(opts)
    rows = Catalog(MemoryStore(cfg.storage)).all().to_pylist()
    views.print_status(console, rows, json_out)


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
    """The memories selected for one question, in time order per video."""
    from actors.query import QueryStage
    from schemas.records import Question

    cfg = _as_of(_config(opts), as_of)
    bound = _bind(cfg)
    stage = QueryStage(bound.checkpoint, bound.encoder, cfg.storage, cfg.query)
    result = stage.select([Question(question=question, where=where, k=k)])[0]
    if result.error is not None:
        _fail(str(result.error))
    if answer:
        try:
            stage.answer([result])
        except ValueError as exc:
            _fail(str(exc))
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
    from flows.answer import QuestionFileError, answer_flow
    from models.answer import ANSWERER_DIR

    cfg = _as_of(_config(opts), as_of)
    bound = _bind(cfg)
    if generate and not (Path(bound.checkpoint) / ANSWERER_DIR / "config.json").is_file():
        _fail(f"the model {bound.checkpoint} has no answerer: train one with `vmem train`")
    try:
        report = answer_flow(questions, str(output), cfg, generate, bound=bound)
    except QuestionFileError as exc:
        _fail(str(exc))
    console.print(
        f"{report.questions} questions: {report.answered} answered, {report.failed} failed; "
        f"{report.rows} rows -> {report.output} ({report.wall_seconds:.1f} s)"
    )


@app.command()
@shared_options(*PIPELINE_OPTIONS)
def sql(
    statement: Annotated[str, typer.Argument(help="SELECT ... FROM memories|videos ...")],
    opts: RunOptions,
    as_of: AsOfOpt = None,
    json_out: JsonOpt = False,
):
    """SQL-like search: ORDER BY relevance('question') ranks memories by fit."""
    from actors.query import QueryStage
    from storage.sql import SqlError

    cfg = _as_of(_config(opts), as_of)
    bound = _bind(cfg)
    try:
        table = QueryStage(bound.checkpoint, bound.encoder, cfg.storage, cfg.query).sql(statement)
    except SqlError as exc:
        _fail(f"SQL error: {exc}")
    views.print_table(console, table.to_pylist(), json_out)


@app.command()
@shared_options(*PIPELINE_OPTIONS)
def serve(
    opts: RunOptions,
    host: Annotated[str, typer.Option(help="bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
):
    """Serve the search API over HTTP: POST /sql, POST /ask, GET /health."""
    import uvicorn

    from actors.api import create_app
    from actors.query import QueryStage

    cfg = _config(opts)
    bound = _bind(cfg)
    stage = QueryStage(bound.checkpoint, bound.encoder, cfg.storage, cfg.query)
    uvicorn.run(create_app(stage), host=host, port=port, log_level="warning")


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

    from flows.demo import run_demo

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
