"""Shared fixtures: the bundled model repository and one live Ray Serve gRPC server per session."""

from __future__ import annotations

import csv
import os
import time
import urllib.request
from pathlib import Path

import pytest
from ports import free_port

ROOT = Path(__file__).resolve().parents[1]
BUNDLED_REPO = ROOT / "models"
BUNDLED_MODEL = "darcy-fno"
# Ray exports what its processes record every 10 s by default; the tests that read pdeserve's metrics
# from Prometheus wait for exports, so the Ray instances they start export every 2 s. Set before any Ray
# starts: its processes read it from the environment. (Ray drops a gauge series not recorded within two
# intervals; the replicas record theirs again every second, serving/metrics.py.)
os.environ.setdefault("RAY_metrics_report_interval_ms", "2000")
# Under pytest-xdist each worker's torch (and the processes it starts) uses one thread: two workers with
# torch's default of a thread per core oversubscribe a 2-core machine, and spinning OpenMP threads then
# take several times as long. Set before torch is imported.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(variable, "1")
# Fixtures whose work several test files share (a session's Ray Serve instance, a trained model): under
# pytest-xdist, the tests that use one run on one worker, so that it is built once.
SHARED_GROUPS = {
    "grpc_target": "ray",
    "small_darcy": "small-darcy",
}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(config, items) -> None:
    """xdist groups (``--dist loadgroup``): the tests of the session's Ray Serve instance in one group, the
    users of another shared session fixture in one, every other test file's tests in one of their own
    (its module-scoped fixtures are built once). tests/test_xdist_groups.py checks they apply."""
    for item in items:
        if item.get_closest_marker("xdist_group"):
            continue
        fixtures = getattr(item, "fixturenames", ())
        shared = [group for fixture, group in SHARED_GROUPS.items() if fixture in fixtures]
        if item.get_closest_marker("ray"):
            shared.insert(0, "ray")
        item.add_marker(pytest.mark.xdist_group(shared[0] if shared else item.nodeid.split("::")[0]))


@pytest.fixture(scope="session")
def bundled_repo() -> Path:
    assert (BUNDLED_REPO / BUNDLED_MODEL).is_dir(), "the bundled model is missing: run `make bundled-model`"
    return BUNDLED_REPO


@pytest.fixture(scope="session")
def bundled_versions(bundled_repo) -> list[str]:
    """The bundled model's published versions, oldest first (the newest is what requests get)."""
    from pdeserve.operators.repository import ModelRepository

    return ModelRepository(bundled_repo).versions(BUNDLED_MODEL)


@pytest.fixture(scope="session")
def metrics_port() -> int:
    """Port where the session's Ray instance exports Prometheus metrics."""
    return free_port()


@pytest.fixture(scope="session")
def node_token() -> tuple[str, str]:
    """``(variable, token)``: an auth token in the environment of the session's Ray nodes, as a
    Kubernetes Secret puts it there, for applications configured with ``auth_token_env``."""
    variable, token = "PDESERVE_TEST_AUTH_TOKEN", "s3cret"
    os.environ[variable] = token  # before Ray starts: its worker processes inherit this environment
    return variable, token


@pytest.fixture(scope="session")
def grpc_target(bundled_repo: Path, metrics_port: int, node_token: tuple[str, str]) -> str:
    """``HOST:PORT`` of a real Ray Serve application serving the bundled repository over gRPC."""
    from pdeserve.serving import server

    # HAProxy's own listeners on free ports too: its defaults may be held by another server on this
    # machine (another test session's, a `pdeserve serve`).
    for variable, _ in server.HAPROXY_PORTS.values():
        os.environ.setdefault(variable, str(free_port()))
    # Throughput-optimised Serve keeps a deleted application's replicas draining for 30 s; the tests
    # delete theirs only once their requests are done, so 2 s saves half a minute per deletion.
    os.environ.setdefault("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "2")
    port = free_port()
    server.start(bundled_repo, grpc_port=port, http_port=free_port(), metrics_port=metrics_port)
    yield f"127.0.0.1:{port}"
    server.stop()


class ServeApps:
    """Other pdeserve applications on the session's Serve instance, each routed by its ``application``
    metadata name (a quarter of a CPU each by default: the 2-core machine already gives one to the main
    application)."""

    def __init__(self, target: str) -> None:
        self.target = target

    def deploy(self, name: str, repo, options=None, replica_cpus: float = 0.25, replicas: int = 1) -> str:
        """Deploy ``repo`` as application ``name`` (returns once it runs); returns the gRPC target."""
        from ray import serve

        from pdeserve.serving.app import build_app

        application = build_app(repo, options, replica_cpus=replica_cpus, replicas=replicas)
        serve.run(application, name=name, route_prefix=f"/{name}")
        self._await_haproxy(name, replicas)
        return self.target

    @staticmethod
    def _await_haproxy(name: str, replicas: int, timeout: float = 60) -> None:
        """Wait until HAProxy routes ``name``'s gRPC requests to its replicas themselves: until then Serve's
        fallback proxy (each backend's backup server) answers them, and it streams without following a
        slow reader."""
        from pdeserve.serving import server

        if "RAY_SERVE_ENABLE_HA_PROXY" not in server.SERVE_ENVIRONMENT:  # no HAProxy on this platform
            return
        variable, default = server.HAPROXY_PORTS["HAProxy stats"]
        url = f"http://127.0.0.1:{os.environ.get(variable, default)}/stats;csv"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:  # HAProxy restarts on each change of its backends
                text = urllib.request.urlopen(url, timeout=5).read().decode()
            except OSError:
                text = ""
            replicas_up = [
                r
                for r in csv.DictReader(text.lstrip("# ").splitlines())
                if r.get("pxname") == f"grpc-{name}"
                and r.get("svname") not in ("FRONTEND", "BACKEND")
                and r.get("bck") != "1"  # the fallback proxy
                and (r.get("status") or "").startswith(("UP", "no check"))
            ]
            if len(replicas_up) >= replicas:
                return
            time.sleep(0.2)
        raise AssertionError(f"HAProxy does not route application {name!r} to its replicas after {timeout} s")

    def delete(self, name: str) -> None:
        from ray import serve

        serve.delete(name)


@pytest.fixture(scope="session")
def serve_apps(grpc_target: str) -> ServeApps:
    return ServeApps(grpc_target)


@pytest.fixture
def deploy_app(serve_apps: ServeApps):
    """``deploy_app(name, repo, options=None, replica_cpus=0.25, replicas=1) -> target``; deleted after
    the test, so requests without ``application`` metadata reach the main application again."""
    names: list[str] = []

    def deploy(name: str, repo, options=None, replica_cpus: float = 0.25, replicas: int = 1) -> str:
        names.append(name)
        return serve_apps.deploy(name, repo, options, replica_cpus, replicas)

    yield deploy
    for name in names:
        serve_apps.delete(name)
