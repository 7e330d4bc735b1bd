"""The options several ``vmem`` commands share, declared once.

``@shared_options(...)`` adds the named options to a Typer command (``--help`` lists them
where the command's ``opts`` parameter stands) and calls the command with one
``RunOptions`` as ``opts``: users still type ``vmem ask "q" --model X``, the command reads
``opts.model`` or ``opts.pipeline_config()``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from schemas.config import VMemConfig, load_config
from schemas.settings import VMemSettings

OPTIONS: dict[str, Any] = {
    "db": Annotated[
        str | None,
        typer.Option("--db", help="LanceDB URI (folder or s3://); default $VMEM_DB or ./vmem-data"),
    ],
    "config": Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="YAML/JSON config file with sections (deploy/vmem.example.yaml); "
            "default $VMEM_CONFIG",
        ),
    ],
    "model": Annotated[str | None, typer.Option("--model", help="VMem checkpoint directory")],
    # pretrained parts composed into a VMem model (instead of --model); README "Real checkpoints"
    "vision_model": Annotated[
        str | None, typer.Option("--vision-model", help="HF vision model dir (ViT, CLIP, SigLIP)")
    ],
    "encoder_lm": Annotated[
        str | None, typer.Option("--encoder-lm", help="HF causal LM dir: the memory encoder")
    ],
    "encoder_lm_layers": Annotated[
        int | None,
        typer.Option("--encoder-lm-layers", min=1, help="keep the LM's first N layers (paper: 16)"),
    ],
    "question_model": Annotated[
        str | None,
        typer.Option("--question-model", help="HF sentence encoder dir (e.g. all-MiniLM-L6-v2)"),
    ],
}
MODEL_OPTIONS = ("model", "vision_model", "encoder_lm", "encoder_lm_layers", "question_model")
PIPELINE_OPTIONS = ("db", "config", *MODEL_OPTIONS)  # what every command running the model takes
KEYWORD_ONLY = inspect.Parameter.KEYWORD_ONLY


@dataclass(frozen=True)
class RunOptions:
    """The shared options as the user gave them (None: not given)."""

    db: str | None = None
    config: Path | None = None
    model: str | None = None
    vision_model: str | None = None
    encoder_lm: str | None = None
    encoder_lm_layers: int | None = None
    question_model: str | None = None

    def config_file(self) -> str | Path | None:
        """``--config``, else ``$VMEM_CONFIG``, else None (the defaults)."""
        return self.config or VMemSettings().config

    def pipeline_config(self) -> VMemConfig:
        """The config file (or the defaults) with these options' overrides; ConfigError."""
        model = {
            "path": self.model,
            "vision_model": self.vision_model,
            "encoder_lm": self.encoder_lm,
            "encoder_lm_layers": self.encoder_lm_layers,
            "question_model": self.question_model,
        }
        return load_config(self.config_file(), storage={"db": self.db}, model=model)


def shared_options(*names: str) -> Callable[[Callable], Callable]:
    """Decorator: the command gains the named options of ``OPTIONS`` and is called with
    ``opts=RunOptions(...)`` in their place."""

    def decorate(command: Callable) -> Callable:
        params = []  # keyword-only (Typer passes keywords): the shared ones where ``opts`` was
        for param in inspect.signature(command, eval_str=True).parameters.values():
            if param.name == "opts":
                params += [
                    inspect.Parameter(name, KEYWORD_ONLY, default=None, annotation=OPTIONS[name])
                    for name in names
                ]
            else:
                params.append(param.replace(kind=KEYWORD_ONLY))

        @functools.wraps(command)
        def run(**kwargs: Any) -> Any:
            given = {name: kwargs.pop(name) for name in names}
            return command(opts=RunOptions(**given), **kwargs)

        run.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in params}
        return run

    return decorate
