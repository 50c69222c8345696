"""Shared fixtures: one real local Ray, a real S3 server on 127.0.0.1, and a tiny untrained checkpoint."""

from __future__ import annotations

import dataclasses
import os
import uuid
from dataclasses import dataclass

import pytest
import torch

from mgr_batch.config import GTZAN_GENRES, AudioConfig, ClipConfig, FeatureConfig, ModelConfig
from mgr_batch.models import checkpoint
from mgr_batch.models.checkpoint import ModelSpec

#: Fixtures that start or join a real Ray: a test that uses one (directly or through another fixture) is an
#: end-to-end test, marked ``e2e`` so that ``pytest -m "not e2e"`` runs the Ray-free tests alone.
RAY_FIXTURES = frozenset({"ray_cluster", "ray_head"})


def pytest_collection_modifyitems(config, items):
    for item in items:
        if RAY_FIXTURES & set(getattr(item, "fixturenames", ())) or item.get_closest_marker("fault"):
            item.add_marker(pytest.mark.e2e)


#: Under ``CI=true`` a skipped test fails the run (a check CI lost to its machine), unless its reason starts with
#: one of these, what a CI machine cannot have; those skips are listed, test by test, at the end of the run.
CI_ALLOWED_SKIPS = {
    "needs CUDA": "CI machines have no GPU; on one with CUDA these tests run",
}
_CI_SKIPS = pytest.StashKey[list]()


def _in_ci() -> bool:
    return os.environ.get("CI") == "true"


def _police_skip(report: pytest.TestReport | pytest.CollectReport, config: pytest.Config) -> None:
    """Under ``CI=true``: a skip whose reason :data:`CI_ALLOWED_SKIPS` does not allow becomes a failure; an
    allowed one is kept for :func:`pytest_terminal_summary`. An expected failure (xfail) is no skip."""
    if not (_in_ci() and report.skipped) or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    reason = reason.removeprefix("Skipped: ")
    if reason.startswith(tuple(CI_ALLOWED_SKIPS)):
        config.stash.setdefault(_CI_SKIPS, []).append((report.nodeid, reason))
        return
    report.outcome = "failed"
    report.longrepr = f"skipped under CI=true, where only {sorted(CI_ALLOWED_SKIPS)} may skip: {reason}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    _police_skip(report, item.config)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    report = yield
    _police_skip(report, collector.config)
    return report


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    allowed = config.stash.get(_CI_SKIPS, [])
    if allowed:
        terminalreporter.section(f"skips allowed under CI=true ({len(allowed)})")
        for nodeid, reason in allowed:
            terminalreporter.line(f"{nodeid}: {reason} ({CI_ALLOWED_SKIPS[_allowed_prefix(reason)]})")


def _allowed_prefix(reason: str) -> str:
    return next(p for p in CI_ALLOWED_SKIPS if reason.startswith(p))


#: The tiny model's features: few mels and a long hop keep every test that featurizes fast.
TINY_FEATURES = FeatureConfig(n_mels=32, hop_length=1024)


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray with 2 CPUs, started once (unless one is already up) and shut down at the end."""
    import ray

    from mgr_batch.config import RayConfig
    from mgr_batch.execution.runtime import init_kwargs, set_local_environment, shutdown

    if not ray.is_initialized():  # as mgr-batch starts its embedded Ray for training, with 2 CPUs
        set_local_environment(os.environ)
        ray.init(**init_kwargs(RayConfig(num_cpus=2), {}, trains=True))
    yield ray
    shutdown()


def tiny_spec() -> ModelSpec:
    return ModelSpec(
        genres=GTZAN_GENRES,
        audio=AudioConfig(),
        clips=ClipConfig(),
        features=TINY_FEATURES,
        model=ModelConfig(name="cnn", params={"channels": [4, 8]}),
    )


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """Directory of an untrained, seeded ``cnn`` checkpoint (32 mels, hop 1024, 3 s clips, GTZAN genres)."""
    torch.manual_seed(0)
    spec = tiny_spec()
    directory = tmp_path_factory.mktemp("tiny_model")
    checkpoint.save(str(directory), spec.build(), spec)
    return str(directory)


@pytest.fixture(scope="session")
def tiny_crnn(tmp_path_factory) -> str:
    """Directory of an untrained, seeded ``crnn`` checkpoint (features as :func:`tiny_model`'s).

    Two pooling blocks of 2: 4 frames per timeline step, so a 3 s clip's 65 frames give 17 steps, the
    last one a single frame.
    """
    torch.manual_seed(0)
    spec = dataclasses.replace(
        tiny_spec(), model=ModelConfig(name="crnn", params={"channels": [4, 8], "hidden_size": 8, "dropout": 0.0})
    )
    directory = tmp_path_factory.mktemp("tiny_crnn")
    checkpoint.save(str(directory), spec.build(), spec)
    return str(directory)


@dataclass(frozen=True)
class S3:
    """A real S3-compatible server (moto's) on 127.0.0.1, and how to reach it."""

    endpoint: str
    options: dict
    fs: object

    def cli_options(self) -> list[str]:
        return [a for k, v in self.options.items() for a in ("--storage-option", f"{k}={v}")]


#: A secret the tests can look for in every output, to prove it is never written or logged.
S3_SECRET = "testing-secret-never-logged"


@pytest.fixture(scope="session")
def s3_server():
    """moto's threaded S3 server on 127.0.0.1 (a free port), for the whole session."""
    import s3fs
    from moto.server import ThreadedMotoServer

    for var, value in (
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        os.environ.setdefault(var, value)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    options = {"endpoint_url": endpoint, "key": "testing-key", "secret": S3_SECRET}
    yield S3(endpoint=endpoint, options=options, fs=s3fs.S3FileSystem(**options, skip_instance_cache=True))
    server.stop()


@pytest.fixture
def s3_bucket(s3_server) -> str:
    """A fresh empty bucket; returns ``s3://name``."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3_server.fs.mkdir(name)
    return f"s3://{name}"
