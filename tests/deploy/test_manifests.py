"""Every file under deploy/ against what it names: Prefect deployments against the flows and
the config schema, the KubeRay cluster against the cluster's needs (autoscaling, GPUs,
shared memory, credentials, pinned images, the Prefect worker), the Dockerfile's torch
builds, and the `vmem` commands of deploy/README.md against the CLI's options."""

from __future__ import annotations

import inspect
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import ray
import typer
import yaml

from cli.app import app
from schemas.config import VMemConfig

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
PREFECT_FILE = yaml.safe_load((DEPLOY / "prefect.yaml").read_text())
DEPLOYMENTS = {d["name"]: d for d in PREFECT_FILE["deployments"]}
CLUSTER = yaml.safe_load((DEPLOY / "ray-cluster.yaml").read_text())
GROUPS = {"head": CLUSTER["spec"]["headGroupSpec"]} | {
    g["groupName"]: g for g in CLUSTER["spec"]["workerGroupSpecs"]
}
POOL = "vmem"


def _flow(deployment: dict):
    from prefect.flows import Flow, load_flow_from_entrypoint

    flow = load_flow_from_entrypoint(deployment["entrypoint"], use_placeholder_flow=False)
    assert isinstance(flow, Flow)
    return flow


def _containers(group: dict) -> list[dict]:
    return group["template"]["spec"]["containers"]


def _gpus(container: dict) -> int:
    return int(container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0))


# --- deploy/prefect.yaml ---------------------------------------------------------------


def test_the_prefect_file_deploys_the_installed_package_without_a_pull_path():
    assert PREFECT_FILE["pull"] == []  # no directory that exists on one machine only
    for deployment in DEPLOYMENTS.values():
        assert ":" not in deployment["entrypoint"], "a module path of the installed package"
        assert deployment["work_pool"]["name"] == POOL


@pytest.mark.parametrize("name", sorted(DEPLOYMENTS))
def test_each_deployment_imports_and_its_parameters_fit_its_flow(name):
    deployment = DEPLOYMENTS[name]
    flow = _flow(deployment)
    params = deployment.get("parameters", {})
    signature = inspect.signature(flow.fn)
    signature.bind_partial(**params)  # every parameter is one the flow takes
    if "config" in params:
        cfg = VMemConfig.model_validate(params["config"])  # the one config tree
        if "ray" in params["config"]:  # runs join the cluster the worker runs on
            assert cfg.ray.address == "auto"
        assert cfg.storage.db.startswith("s3://")  # no database on one machine's disk
    if deployment.get("schedules"):  # nobody is there to give a scheduled run its inputs
        required = [
            p.name
            for p in signature.parameters.values()
            if p.default is inspect.Parameter.empty and p.name not in params
        ]
        assert not required, f"{name} is scheduled but leaves {required} unset"
        from prefect.client.schemas.schedules import CronSchedule

        for schedule in deployment["schedules"]:
            CronSchedule(cron=schedule["cron"], timezone=schedule.get("timezone"))


def test_the_ingest_deployment_runs_one_at_a_time_on_its_database():
    ingest = DEPLOYMENTS["nightly-archive-ingest"]
    assert ingest["concurrency_limit"] == {"limit": 1, "collision_strategy": "ENQUEUE"}
    assert _flow(ingest).name == "vmem-ingest"


# --- deploy/ray-cluster.yaml ---------------------------------------------------------


def test_the_cluster_autoscales_within_each_groups_limits():
    spec = CLUSTER["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["autoscalerOptions"]["idleTimeoutSeconds"] > 0
    assert spec["rayVersion"] == ray.__version__  # the image's Ray is the driver's Ray
    for group in spec["workerGroupSpecs"]:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], group


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_every_container_uses_a_pinned_image_and_the_s3_secret(group):
    for container in _containers(GROUPS[group]):
        image = container["image"]
        name, _, tag = image.rpartition(":")
        assert name and tag and tag != "latest" and "/" not in tag, image
        variant = "cuda" if _gpus(container) else "cpu"
        assert tag.endswith(f"-{variant}"), f"{image}: a {variant} container needs that image"
        refs = [e["secretRef"]["name"] for e in container.get("envFrom", [])]
        assert refs == ["vmem-s3"], container["name"]


def test_gpu_workers_are_placed_on_gpu_nodes_with_shared_memory():
    gpu_groups = [g for g in GROUPS.values() if any(_gpus(c) for c in _containers(g))]
    assert gpu_groups
    for group in gpu_groups:
        pod = group["template"]["spec"]
        assert pod["nodeSelector"]
        assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    for name, group in GROUPS.items():  # Ray's object store lives in /dev/shm on every node
        pod = group["template"]["spec"]
        memory_volumes = {
            v["name"] for v in pod["volumes"] if v.get("emptyDir", {}).get("medium") == "Memory"
        }
        for container in _containers(group):
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert mounts.get("/dev/shm") in memory_volumes, (name, container["name"])


def test_the_prefect_worker_runs_on_the_ray_head_and_polls_the_deployments_pool():
    from prefect.workers.process import ProcessWorker

    head = GROUPS["head"]
    ray_head, *sidecars = _containers(head)  # KubeRay takes the first container for Ray
    (worker,) = [c for c in sidecars if c["name"] == "prefect-worker"]
    command = [*worker["command"], *worker["args"]]
    assert command == ["prefect", "worker", "start", "--pool", POOL, "--type", "process"]
    assert ProcessWorker.type == "process"
    assert "PREFECT_API_URL" in {e["name"] for e in worker["env"]}
    # `ray.init(address="auto")` in a flow run finds the head's Ray session through this
    mounts = {
        c["name"]: {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        for c in [ray_head, worker]
    }
    assert mounts["ray-head"]["/tmp/ray"] == mounts["prefect-worker"]["/tmp/ray"]
    assert head["rayStartParams"]["num-cpus"] == "0"


# --- deploy/Dockerfile -----------------------------------------------------------------


def test_the_image_builds_cpu_and_cuda_variants_each_with_its_own_torch():
    text = (DEPLOY / "Dockerfile").read_text()
    torch_pin = next(
        d
        for d in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
        if d.startswith("torch==")
    )
    stages = re.findall(r"^FROM (\S+) AS (\S+)$", text, re.MULTILINE)  # (from, name)
    assert {"torch-cpu", "torch-cuda"} <= {name for _, name in stages}
    assert stages[-1][0] == "torch-${VARIANT}"  # the build argument picks the torch
    for variant, index in (("cpu", "whl/cpu"), ("cuda", "whl/cu")):
        stage = text.split(f"AS torch-{variant}\n", 1)[1].split("\nFROM ", 1)[0]
        (install,) = [line for line in stage.splitlines() if "pip install" in line]
        assert torch_pin in install and "--index-url" in install, install
        assert index in install or index in stage, stage
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.MULTILINE).group(1)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base)  # a pinned base
    assert not re.search(r"^ENTRYPOINT", text, re.MULTILINE)  # containers give their commands


def test_the_image_copies_every_room_of_the_package():
    """A room pyproject packages but the image leaves out fails only at run time."""
    text = (DEPLOY / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\w+) \1$", text, re.MULTILINE))
    found = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    rooms = {p.rstrip("*") for p in found["packages"]["find"]["include"]}
    assert rooms and rooms == copied


# --- the commands of deploy/README.md --------------------------------------------------


def _readme_vmem_commands() -> list[list[str]]:
    text = (DEPLOY / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh|console)?\n(.*?)```", text, re.DOTALL)
    lines = " ".join(blocks).replace("\\\n", " ").splitlines()
    return [
        shlex.split(line.split("#", 1)[0]) for line in lines if line.strip().startswith("vmem ")
    ]


def test_every_vmem_command_in_the_deploy_readme_exists_with_its_flags():
    commands = _readme_vmem_commands()
    assert commands
    click_app = typer.main.get_command(app)
    for words in commands:
        command = click_app.commands[words[1]]  # type: ignore[attr-defined]
        known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
        flags = {w.split("=", 1)[0] for w in words[2:] if w.startswith("-")}
        assert flags <= known, f"{' '.join(words)}: unknown {flags - known}"
