"""The ``vmem`` command line: starts the flows and prints their results."""

from __future__ import annotations

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import warnings  # noqa: E402

# Prefect starts its ephemeral API with subprocess (fork+exec, nothing shared runs there)
warnings.filterwarnings("ignore", message="lancedb fork support is experimental")

from pathlib import Path  # noqa: E402
from typing import Annotated  # noqa: E402

import typer  # noqa: E402
from pydantic import ValidationError  # noqa: E402
from rich.console import Console  # noqa: E402

from flows import views  # noqa: E402
from schemas.config import ConfigError, VMemConfig, load_config  # noqa: E402

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console()
err = Console(stderr=True)

DbOpt = Annotated[
    str | None,
    typer.Option("--db", help="LanceDB URI (folder or s3://); default $VMEM_DB or ./vmem-data"),
]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="YAML/JSON config file")]
ModelOpt = Annotated[str | None, typer.Option("--model", help="VMem checkpoint directory")]
# pretrained parts composed into a VMem model (instead of --model); see README "Real checkpoints"
VisionOpt = Annotated[
    str | None, typer.Option("--vision-model", help="HF vision model dir (ViT, CLIP, SigLIP)")
]
EncoderLmOpt = Annotated[
    str | None, typer.Option("--encoder-lm", help="HF causal LM dir: the memory encoder")
]
LayersOpt = Annotated[
    int | None,
    typer.Option("--encoder-lm-layers", min=1, help="keep the LM's first N layers (paper: 16)"),
]
QuestionModelOpt = Annotated[
    str | None,
    typer.Option("--question-model", help="HF sentence encoder dir (e.g. all-MiniLM-L6-v2)"),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="one JSON object per line")]


def _config(
    config: Path | None,
    db: str | None,
    model: str | None = None,
    vision_model: str | None = None,
    encoder_lm: str | None = None,
    encoder_lm_layers: int | None = None,
    question_model: str | None = None,
) -> VMemConfig:
    """The config file (or the defaults) with the command line's overrides."""
    overrides = {
        "path": model,
        "vision_model": vision_model,
        "encoder_lm": encoder_lm,
        "encoder_lm_layers": encoder_lm_layers,
        "question_model": question_model,
    }
    try:
        return load_config(config).with_overrides(storage={"db": db}, model=overrides)
    except ConfigError as exc:
        _fail(str(exc))
    except ValidationError as exc:
        _fail("; ".join(error["msg"] for error in exc.errors()))


def _bind(cfg: VMemConfig):
    """The run's model (composed and cached on first use), or a clear error."""
    from actors.runtime import bind_model

    try:
        return bind_model(cfg)
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))


def _fail(message: str, code: int = 2):
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


@app.command()
def ingest(
    source: Annotated[str, typer.Argument(help="folder (recursive) or s3://bucket/prefix")],
    db: DbOpt = None,
    config: ConfigOpt = None,
    model: ModelOpt = None,
    vision_model: VisionOpt = None,
    encoder_lm: EncoderLmOpt = None,
    encoder_lm_layers: LayersOpt = None,
    question_model: QuestionModelOpt = None,
    retry_failed: Annotated[bool, typer.Option(help="retry videos that failed before")] = False,
):
    """Decode and encode every new or changed video of SOURCE into memories."""
    from flows.ingest import ingest_flow
    from storage.archive import ArchiveError

    cfg = _config(config, db, model, vision_model, encoder_lm, encoder_lm_layers, question_model)
    _bind(cfg)  # compose (or build) the model once here, so a bad part fails clearly
    try:
        report = ingest_flow(source, cfg, retry_failed)
    except ArchiveError as exc:
        _fail(str(exc))
    views.print_ingest_report(console, report)


@app.command()
def status(db: DbOpt = None, config: ConfigOpt = None, json_out: JsonOpt = False):
    """The catalog: every video, its status and error."""
    from storage.catalog import Catalog
    from storage.memories import MemoryStore

    cfg = _config(config, db)
    rows = Catalog(MemoryStore(cfg.storage)).all().to_pylist()
    views.print_status(console, rows, json_out)


@app.command()
def ask(
    question: str,
    db: DbOpt = None,
    config: ConfigOpt = None,
    model: ModelOpt = None,
    vision_model: VisionOpt = None,
    encoder_lm: EncoderLmOpt = None,
    encoder_lm_layers: LayersOpt = None,
    question_model: QuestionModelOpt = None,
    where: Annotated[str | None, typer.Option(help="SQL predicate pre-filter")] = None,
    k: Annotated[int | None, typer.Option("-k", help="clips selected per video")] = None,
    answer: Annotated[
        bool, typer.Option("--answer", help="generate an answer (needs a trained model)")
    ] = False,
    json_out: JsonOpt = False,
):
    """The memories selected for one question, in time order per video."""
    from actors.query import QueryStage
    from schemas.records import Question

    cfg = _config(config, db, model, vision_model, encoder_lm, encoder_lm_layers, question_model)
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
def answer(
    questions: Annotated[Path, typer.Argument(help='JSONL: one {"question": ...} per line')],
    output: Annotated[Path, typer.Option("-o", "--output", help="results .parquet")],
    db: DbOpt = None,
    config: ConfigOpt = None,
    model: ModelOpt = None,
    vision_model: VisionOpt = None,
    encoder_lm: EncoderLmOpt = None,
    encoder_lm_layers: LayersOpt = None,
    question_model: QuestionModelOpt = None,
    generate: Annotated[
        bool, typer.Option("--generate", help="add generated answers (needs a trained model)")
    ] = False,
):
    """Answer a bulk batch of questions on the query actor pool; write Parquet."""
    from flows.answer import QuestionFileError, answer_flow
    from models.answer import ANSWERER_DIR

    cfg = _config(config, db, model, vision_model, encoder_lm, encoder_lm_layers, question_model)
    bound = _bind(cfg)  # compose (or build) the model once here, so a bad part fails clearly
    if generate and not (Path(bound.checkpoint) / ANSWERER_DIR / "config.json").is_file():
        _fail(f"the model {bound.checkpoint} has no answerer: train one with `vmem train`")
    try:
        report = answer_flow(str(questions), str(output), cfg, generate)
    except QuestionFileError as exc:
        _fail(str(exc))
    console.print(
        f"{report.questions} questions: {report.answered} answered, {report.failed} failed; "
        f"{report.rows} rows -> {report.output} ({report.wall_seconds:.1f} s)"
    )


@app.command()
def sql(
    statement: Annotated[str, typer.Argument(help="SELECT ... FROM memories|videos ...")],
    db: DbOpt = None,
    config: ConfigOpt = None,
    model: ModelOpt = None,
    vision_model: VisionOpt = None,
    encoder_lm: EncoderLmOpt = None,
    encoder_lm_layers: LayersOpt = None,
    question_model: QuestionModelOpt = None,
    json_out: JsonOpt = False,
):
    """SQL-like search: ORDER BY relevance('question') ranks memories by fit."""
    from actors.query import QueryStage
    from storage.sql import SqlError

    cfg = _config(config, db, model, vision_model, encoder_lm, encoder_lm_layers, question_model)
    bound = _bind(cfg)
    try:
        table = QueryStage(bound.checkpoint, bound.encoder, cfg.storage, cfg.query).sql(statement)
    except SqlError as exc:
        _fail(f"SQL error: {exc}")
    views.print_table(console, table.to_pylist(), json_out)


@app.command()
def serve(
    db: DbOpt = None,
    config: ConfigOpt = None,
    model: ModelOpt = None,
    vision_model: VisionOpt = None,
    encoder_lm: EncoderLmOpt = None,
    encoder_lm_layers: LayersOpt = None,
    question_model: QuestionModelOpt = None,
    host: Annotated[str, typer.Option(help="bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
):
    """Serve the search API over HTTP: POST /sql, POST /ask, GET /health."""
    import uvicorn

    from actors.api import create_app
    from actors.query import QueryStage

    cfg = _config(config, db, model, vision_model, encoder_lm, encoder_lm_layers, question_model)
    bound = _bind(cfg)
    stage = QueryStage(bound.checkpoint, bound.encoder, cfg.storage, cfg.query)
    uvicorn.run(create_app(stage), host=host, port=port, log_level="warning")


@app.command()
def train(
    output: Annotated[Path, typer.Option("-o", "--output", help="checkpoint directory")] = Path(
        "vmem-trained"
    ),
    config: Annotated[
        Path | None, typer.Option("--config", help="YAML/JSON training config (TrainConfig)")
    ] = None,
    base: Annotated[str | None, typer.Option(help="VMem checkpoint to fine-tune")] = None,
    steps: Annotated[int | None, typer.Option(help="training steps")] = None,
    smoke: Annotated[bool, typer.Option(help="the tiny smoke config (under a minute)")] = False,
    bundle: Annotated[
        Path | None,
        typer.Option(
            help="also export the result as a trained-default bundle into this folder "
            "(checkpoints/default is the committed default; see checkpoints/default.py)"
        ),
    ] = None,
):
    """Train the memory model on the procedural video world; writes an HF checkpoint."""
    import logging

    import yaml
    from pydantic import ValidationError

    from flows.train import train_flow
    from schemas.train_config import TrainConfig

    logging.getLogger("prefect.flow_runs").setLevel(logging.INFO)  # the run's progress lines

    overrides = {"out_dir": str(output), "base": base, "steps": steps}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    try:
        raw = yaml.safe_load(config.read_text()) if config else {}
        cfg = (
            TrainConfig.smoke(**{**raw, **overrides})
            if smoke
            else TrainConfig.model_validate({**(raw or {}), **overrides})
        )
    except (OSError, yaml.YAMLError, ValidationError, TypeError) as exc:
        _fail(f"invalid training config: {exc}")
    checkpoint = train_flow(cfg)
    console.print(f"trained checkpoint: {checkpoint} (use it with --model {checkpoint})")
    if bundle is not None:
        from checkpoints.bundle import export_bundle

        try:
            console.print(f"bundle: {export_bundle(checkpoint, bundle)}")
        except ValueError as exc:
            _fail(str(exc))


@app.command(name="eval")
def evaluate(
    seed: Annotated[int, typer.Option(help="first held-out world seed")] = 5000,
    minutes: Annotated[float, typer.Option(help="length of each world video")] = 10.0,
    videos: Annotated[int, typer.Option(help="held-out world videos")] = 3,
    model: ModelOpt = None,
    grid: Annotated[
        str | None, typer.Option(help="needle grid video lengths in minutes, e.g. 1,5,15,30,60")
    ] = None,
    grid_videos: Annotated[
        int, typer.Option(help="needle videos per grid cell (different worlds)")
    ] = 1,
    no_ablations: Annotated[bool, typer.Option(help="skip ablations (a) and (b)")] = False,
    workdir: Annotated[Path, typer.Option(help="videos, databases, grid files")] = Path(
        "vmem-eval"
    ),
    json_out: JsonOpt = False,
):
    """Evaluate a model on held-out procedural worlds through the real pipeline."""
    import json
    import math

    from flows.eval import eval_flow
    from schemas.eval_config import EvalConfig

    try:
        cfg = EvalConfig(
            model=model,
            seed=seed,
            minutes=minutes,
            videos=videos,
            workdir=str(workdir),
            ablations=not no_ablations,
            grid_minutes=[float(v) for v in grid.split(",")] if grid else [],
            grid_videos=grid_videos,
        )
    except ValueError as exc:
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
def demo(
    workdir: Annotated[Path, typer.Option(help="where the sample archive is written")] = Path(
        "vmem-demo"
    ),
    db: DbOpt = None,
    config: ConfigOpt = None,
    model: ModelOpt = None,
    json_out: JsonOpt = False,
):
    """Write demo world videos (and two broken files), ingest them, ask each video questions
    made from its ground truth, and print the model's answers beside the truth."""
    import json

    from flows.demo import run_demo

    cfg = _config(config, db or str(workdir / "db"), model)
    summary = run_demo(workdir, cfg, console)
    if json_out:
        print(json.dumps(summary))


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
