"""cluster.yaml passes Ray's own cluster-config validation (offline), and the jobs/ entry points run."""

from __future__ import annotations

import copy
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "cluster.yaml"
JOBS = {
    "tag": ROOT / "jobs" / "tag_catalog.py",
    "train": ROOT / "jobs" / "train.py",
    "evaluate": ROOT / "jobs" / "evaluate.py",
}


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a connection (e.g. to AWS) fails the test."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"network access during config validation: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def raw_config() -> dict[str, Any]:
    with CLUSTER_YAML.open() as f:
        return yaml.safe_load(f)


def ray_validate(config: dict[str, Any]) -> dict[str, Any]:
    """What ``ray up`` does before any cloud call: merge the provider's defaults, then validate.

    ``prepare_config`` fills the AWS defaults (ray/autoscaler/aws/defaults.yaml) and per-type min/max
    workers; ``validate_config`` checks the result against ray/autoscaler/ray-schema.json (unknown keys,
    required fields, types) and Ray's cross-field rules (head_node_type, sum of min_workers).
    """
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


@pytest.fixture
def config(no_network: None) -> dict[str, Any]:
    return ray_validate(raw_config())


def worker_types(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: t for name, t in config["available_node_types"].items() if name != config["head_node_type"]}


def test_cluster_yaml_passes_ray_validation(config: dict[str, Any]) -> None:
    assert config["cluster_name"] == "mgr-batch"
    assert config["provider"]["type"] == "aws"
    assert config["provider"]["region"]
    assert config["idle_timeout_minutes"] > 0


def test_head_takes_no_work(config: dict[str, Any]) -> None:
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"].get("CPU") == 0
    assert head["resources"].get("GPU", 0) == 0
    assert head["max_workers"] == 0


def test_has_cpu_and_gpu_worker_types(config: dict[str, Any]) -> None:
    workers = worker_types(config)
    gpu = [name for name, t in workers.items() if t["resources"].get("GPU", 0) > 0]
    cpu_only = [name for name, t in workers.items() if t["resources"].get("GPU", 0) == 0]
    assert gpu, f"no worker type declares GPU resources: {sorted(workers)}"
    assert cpu_only, f"no CPU-only worker type: {sorted(workers)}"
    for name in cpu_only:
        assert workers[name]["resources"].get("CPU", 1) > 0, f"{name} would run nothing"


def test_min_max_workers(config: dict[str, Any]) -> None:
    for name, t in config["available_node_types"].items():
        assert 0 <= t["min_workers"] <= t["max_workers"], name
    # The global cap lets every worker type reach its own maximum at the same time.
    assert sum(t["max_workers"] for t in worker_types(config).values()) <= config["max_workers"]


def test_project_is_mounted_and_installed(config: dict[str, Any]) -> None:
    assert config["file_mounts"] == {"~/mgr-batch": "."}
    assert any("pip install -e ~/mgr-batch" in cmd for cmd in config["setup_commands"])


def _without_node_config(c: dict[str, Any]) -> None:
    del c["available_node_types"]["gpu_worker"]["node_config"]


def _unknown_top_level_key(c: dict[str, Any]) -> None:
    c["max_worker"] = 3  # typo of max_workers


def _unknown_node_type_key(c: dict[str, Any]) -> None:
    c["available_node_types"]["cpu_worker"]["instance_type"] = "c6i.8xlarge"  # belongs in node_config


def _fractional_gpu(c: dict[str, Any]) -> None:
    c["available_node_types"]["gpu_worker"]["resources"]["GPU"] = 0.5  # node resources are integers


def _missing_head_type(c: dict[str, Any]) -> None:
    c["head_node_type"] = "no_such_type"


def _min_workers_over_global_max(c: dict[str, Any]) -> None:
    c["available_node_types"]["cpu_worker"]["min_workers"] = c["max_workers"] + 1


@pytest.mark.parametrize(
    ("breakage", "error", "match"),
    [
        (_without_node_config, jsonschema.ValidationError, "'node_config' is a required property"),
        (_unknown_top_level_key, jsonschema.ValidationError, "'max_worker' was unexpected"),
        (_unknown_node_type_key, jsonschema.ValidationError, "'instance_type' was unexpected"),
        (_fractional_gpu, jsonschema.ValidationError, "is not of type 'integer'"),
        (_missing_head_type, ValueError, "head_node_type"),
        (_min_workers_over_global_max, ValueError, "sum of `min_workers`"),
    ],
)
def test_broken_copies_are_rejected(no_network: None, breakage, error: type[Exception], match: str) -> None:
    broken = raw_config()
    breakage(broken)
    with pytest.raises(error, match=match):
        ray_validate(broken)


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(extra)
    return env


@pytest.mark.parametrize("command", sorted(JOBS))
def test_job_script_help(command: str) -> None:
    script = JOBS[command]
    assert script.is_file()
    for env in (_clean_env(), _clean_env(RAY_ADDRESS="127.0.0.1:6379")):
        proc = subprocess.run(
            [sys.executable, str(script.relative_to(ROOT)), "--help"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        assert f"usage: mgr-batch {command}" in proc.stdout
        assert "--address" in proc.stdout


def test_commands_join_the_job_cluster_inside_a_ray_job() -> None:
    from mgr_batch.config import RayConfig
    from mgr_batch.execution.runtime import WORKER_SETUP, init_kwargs

    quiet = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR}
    assert init_kwargs(RayConfig(num_cpus=3), {}, verbose=False) == quiet | {"num_cpus": 3}
    assert init_kwargs(RayConfig(num_cpus=3), {}, trains=True, verbose=True) == quiet | {
        "log_to_driver": True,
        "logging_level": logging.INFO,
        "num_cpus": 3,
        "runtime_env": {"worker_process_setup_hook": WORKER_SETUP},
    }
    assert "runtime_env" not in init_kwargs(RayConfig(), {"RAY_ADDRESS": "10.0.0.1:6379"}, trains=True)
    inside = init_kwargs(RayConfig(), {"RAY_ADDRESS": "10.0.0.1:6379"})  # what Ray's job supervisor sets
    assert inside["address"] == "auto" and "num_cpus" not in inside
    assert init_kwargs(RayConfig(address="ray://head:10001"), {"RAY_ADDRESS": "x"})["address"] == "ray://head:10001"


def test_worker_setup_quiets_the_placement_group_cleaner(monkeypatch) -> None:
    """The embedded Ray's worker hook keeps the cleaner's every-second warning out of the log, errors in,
    and survives Ray Train's dictConfig of ``ray.train`` (which resets its children's levels)."""
    import importlib
    import logging.config

    from mgr_batch.execution import worker_setup
    from mgr_batch.execution.runtime import WORKER_SETUP

    module, _, name = WORKER_SETUP.rpartition(".")
    assert getattr(importlib.import_module(module), name) is worker_setup.setup
    seen: list[int] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.levelno)

    (cleaner,) = (logging.getLogger(n) for n in worker_setup.QUIET_LOGGERS)
    handler = Keep()
    monkeypatch.setenv("RAY_ADDRESS", "set-by-the-test")  # this process is no Ray worker
    try:
        worker_setup.setup()
        logging.config.dictConfig(
            {"version": 1, "disable_existing_loggers": False, "loggers": {"ray.train": {"level": "DEBUG"}}}
        )
        cleaner.addHandler(handler)
        cleaner.warning("Failed to query Ray Train Controller actor state.")
        cleaner.error("a real error")
    finally:
        cleaner.removeHandler(handler)
        cleaner.removeFilter(worker_setup._errors_only)
    assert seen == [logging.ERROR]


def test_workers_of_the_embedded_ray_run_the_hook(ray_cluster) -> None:
    """The test session's Ray is started as the product starts its own: its workers ran the hook."""

    @ray_cluster.remote
    def probe() -> tuple[str | None, list[str]]:
        import logging
        import os

        from mgr_batch.execution.worker_setup import QUIET_LOGGERS

        return os.environ.get("RAY_ADDRESS"), [f.__name__ for f in logging.getLogger(QUIET_LOGGERS[0]).filters]

    address, filters = ray_cluster.get(probe.remote())
    assert address == ray_cluster.get_runtime_context().gcs_address
    assert filters == ["_errors_only"]
