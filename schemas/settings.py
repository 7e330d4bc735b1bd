"""Everything VMem reads from the environment, in one place.

VMem's own variables (read when a config is built or a command starts, never at import):

- ``VMEM_DB``: the LanceDB URI (a folder or ``s3://bucket/prefix``) used when neither
  ``--db`` nor the config file's ``storage.db`` names one; default ``./vmem-data``.
- ``VMEM_CONFIG``: the YAML/JSON config file every ``vmem`` command reads when ``--config``
  is not given.

Read by the libraries themselves, not here: ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_SESSION_TOKEN``, ``AWS_REGION`` / ``AWS_DEFAULT_REGION`` and ``AWS_ENDPOINT_URL`` (boto3
and LanceDB's object store; ``storage.uri.lance_options`` copies them into the LanceDB options
a config leaves unset), and the ``PREFECT_*`` / ``RAY_*`` settings of Prefect and Ray.
``quiet_third_party`` gives some of those a quieter default for ``vmem``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DB = "./vmem-data"

# What ``quiet_third_party`` sets, per library, unless the environment already says otherwise
THIRD_PARTY_DEFAULTS: dict[str, dict[str, str]] = {
    "prefect": {
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",  # no usage reports from the local API
        "PREFECT_LOGGING_LEVEL": "WARNING",  # the CLI prints the results itself
    },
    "ray": {
        "RAY_AUTH_MODE": "disabled",  # a local Ray on 127.0.0.1 without an auth token
        "RAY_USAGE_STATS_ENABLED": "0",  # no usage reports
    },
}
# Prefect starts its ephemeral API with subprocess (fork+exec, nothing shared runs there)
LANCEDB_FORK_WARNING = "lancedb fork support is experimental"


class VMemSettings(BaseSettings):
    """VMem's environment variables (``VMEM_*``), read when an instance is built."""

    model_config = SettingsConfigDict(env_prefix="VMEM_", frozen=True, extra="ignore")

    db: str = Field(DEFAULT_DB, description="default LanceDB URI (folder or s3://bucket/prefix)")
    config: str | None = Field(
        None, description="config file read by every command when --config is not given"
    )


def worker_env() -> dict[str, str]:
    """The environment of VMem's Ray workers: the quiet defaults ``quiet_third_party`` gives
    this process (or what its environment says instead), and the lancedb fork warning
    filtered as a ``PYTHONWARNINGS`` entry (a worker is a fresh interpreter)."""
    env = {
        name: os.environ.get(name, value)
        for defaults in THIRD_PARTY_DEFAULTS.values()
        for name, value in defaults.items()
    }
    ignore = f"ignore:{LANCEDB_FORK_WARNING}:RuntimeWarning"
    given = os.environ.get("PYTHONWARNINGS")
    env["PYTHONWARNINGS"] = f"{given},{ignore}" if given else ignore
    return env


def quiet_third_party(libraries: Iterable[str] = ("prefect", "ray", "lancedb")) -> None:
    """Quieter defaults for Prefect and Ray, and no lancedb fork warning.

    Call it before Prefect or Ray is imported (Prefect reads its logging level on import, Ray
    its auth mode on ``ray.init``): the ``vmem`` entry point calls it first thing, and
    ``actors.runtime.ensure_ray`` calls it for Ray. A variable already set in the environment
    keeps its value.
    """
    for library in libraries:
        for name, value in THIRD_PARTY_DEFAULTS.get(library, {}).items():
            os.environ.setdefault(name, value)
        if library == "lancedb":
            warnings.filterwarnings("ignore", message=LANCEDB_FORK_WARNING)
