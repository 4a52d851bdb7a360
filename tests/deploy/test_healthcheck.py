"""The container's HEALTHCHECK entry, against the session's live Ray Serve gRPC server."""

from __future__ import annotations

import socket
import subprocess
import sys

import grpc
import pytest
from chart_support import ROOT

from pdeserve.serving import healthcheck

pytestmark = pytest.mark.ray


def test_check_reports_serving(grpc_target):
    assert healthcheck.check(grpc_target) == "SERVING"
    assert healthcheck.check(grpc_target, service="pdeserve.v1.Solver") == "SERVING"


def test_unknown_service_is_not_found(grpc_target):
    with pytest.raises(grpc.RpcError) as failure:
        healthcheck.check(grpc_target, service="no.such.Service")
    assert failure.value.code() == grpc.StatusCode.NOT_FOUND


def test_main_exit_codes(grpc_target, capsys):
    assert healthcheck.main(["--target", grpc_target]) == 0
    assert capsys.readouterr().out == f"{grpc_target}: SERVING\n"
    assert healthcheck.main(["--target", grpc_target, "--service", "no.such.Service"]) == 1
    assert "NOT_FOUND" in capsys.readouterr().err
    with socket.socket() as bound:  # a port that is taken but not listening: connections are refused
        bound.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{bound.getsockname()[1]}"
        assert healthcheck.main(["--target", closed, "--timeout", "2"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "UNAVAILABLE" in err


def test_the_command_docker_runs(grpc_target):
    """Exactly the HEALTHCHECK's command line (with the session's port), in a fresh interpreter."""
    result = subprocess.run(
        [sys.executable, "-m", "pdeserve.serving.healthcheck", "--target", grpc_target],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert (result.returncode, result.stdout) == (0, f"{grpc_target}: SERVING\n")
