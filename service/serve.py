"""The search service on Ray Serve: one deployment, the FastAPI app as its ingress.

Each replica holds one query stage (model and store loaded once, in the replica's
constructor) and builds the app over it (``__serve_build_asgi_app__``: Serve's late-bound
ingress, so that the app's routes close over the replica's own stage). Replica count,
autoscaling, resources and the queue bound come from ``service`` of the config; when a
deployment's queue is full Serve answers 503 with ``Retry-After``.
"""

from __future__ import annotations

import time
from typing import Any

from ray import serve
from ray.serve.config import BackpressureConfig

from actors.query import QueryStage
from actors.runtime import BoundModel, bind_model, ensure_ray
from schemas.config import ServiceConfig, VMemConfig
from schemas.settings import worker_env
from service.app import create_app
from service.auth import KeyStore
from service.batches import flow_runner

APP_NAME = "vmem"


@serve.deployment
@serve.ingress()
class SearchReplica:
    """One replica: a query stage and the app over it."""

    def __init__(
        self, cfg: VMemConfig, checkpoint: str, encoder: str, dims: tuple[int, int, int]
    ) -> None:
        self.cfg = cfg
        # batches: the Prefect answer flow on the query actor pool, from this replica
        self.batch_runner = flow_runner(cfg, BoundModel(checkpoint, encoder, cfg, dims))
        self.stage = QueryStage(checkpoint, encoder, cfg.storage, cfg.query)
        self.stage.setup()  # the model and the store, once per replica
        self.keys = KeyStore(cfg.storage, cfg.service.keys_refresh_s)

    def __serve_build_asgi_app__(self) -> Any:
        return create_app(self.stage, self.cfg.service, self.keys, self.batch_runner)


def deployment_options(cfg: ServiceConfig) -> dict[str, Any]:
    """Serve's options for the deployment, from the config's ``service`` section."""
    options: dict[str, Any] = {
        "max_ongoing_requests": cfg.max_ongoing_requests,
        "max_queued_requests": cfg.max_queued_requests,
        "backpressure_config": BackpressureConfig(status_code=503, retry_after_s=cfg.retry_after_s),
        "ray_actor_options": {"num_cpus": cfg.replica_num_cpus, "num_gpus": cfg.replica_num_gpus},
    }
    if cfg.autoscale_max_replicas is None:
        options["num_replicas"] = cfg.replicas
    else:
        options["autoscaling_config"] = {
            "min_replicas": cfg.autoscale_min_replicas,
            "max_replicas": cfg.autoscale_max_replicas,
            "target_ongoing_requests": cfg.target_ongoing_requests,
        }
    return options


def replica_env() -> dict[str, str]:
    """The replicas' environment: the quiet worker defaults, and the Prefect API this
    process uses (when it has one), so the batches they run (the answer flow) report to
    it."""
    from prefect.settings import get_current_settings

    env = worker_env()
    api = get_current_settings().api.url
    if api:
        env["PREFECT_API_URL"] = str(api)
    return env


def run_service(
    cfg: VMemConfig,
    host: str | None = None,
    port: int | None = None,
    bound: BoundModel | None = None,
) -> str:
    """Start Serve's HTTP proxy on ``host:port`` (default ``service.host``/``service.port``,
    127.0.0.1:8000) and deploy the service; returns its base URL once every replica is
    up. ``serve.shutdown()`` stops it."""
    bound = bound or bind_model(cfg)
    host, port = host or cfg.service.host, port or cfg.service.port
    ensure_ray(cfg.ray)
    serve.start(http_options={"host": host, "port": port}, proxy_location="HeadOnly")
    options = deployment_options(cfg.service)
    options["ray_actor_options"]["runtime_env"] = {"env_vars": replica_env()}
    deployment = SearchReplica.options(**options)
    serve.run(
        deployment.bind(cfg, bound.checkpoint, bound.encoder, bound.dims),
        name=APP_NAME,
        route_prefix="/",
        blocking=False,
    )
    return f"http://{host}:{port}"


def serve_until_stopped(cfg: VMemConfig, host: str, port: int, bound: BoundModel) -> None:
    """Run the service until Ctrl-C (or SIGTERM), then shut Serve down."""
    import signal

    def stop(*_: Any) -> None:
        raise KeyboardInterrupt

    try:
        url = run_service(cfg, host, port, bound)
        signal.signal(signal.SIGTERM, stop)  # after Ray's start, which sets its own
        print(f"serving {url}/v1 (OpenAPI at {url}/v1/openapi.json); Ctrl-C stops", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()
