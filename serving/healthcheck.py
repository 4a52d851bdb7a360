"""``python -m pdeserve.serving.healthcheck``: one ``grpc.health.v1.Health/Check`` call, exit 0 if SERVING.

The container image's ``HEALTHCHECK`` runs it every 30 s, so it imports only grpc and pdeserve's
settings module (no torch, no Ray, no numpy): a call costs little CPU.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pdeserve.serving.options import DEFAULT_GRPC_PORT

DEFAULT_TARGET = f"127.0.0.1:{DEFAULT_GRPC_PORT}"


def check(target: str = DEFAULT_TARGET, service: str = "", timeout: float = 5.0) -> str:
    """The health status name (``SERVING``, ``NOT_SERVING``, ...) that ``target`` reports for ``service``.

    Parameters
    ----------
    target : str
        ``HOST:PORT`` of the gRPC server.
    service : str
        Service to ask about; empty asks about the server as a whole.
    timeout : float
        Deadline of the call in seconds.

    Raises
    ------
    grpc.RpcError
        When the call fails (server down, deadline exceeded, unknown service).
    """
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the status on one line; exit 0 when SERVING, 1 otherwise (as Docker's HEALTHCHECK expects)."""
    parser = argparse.ArgumentParser(
        prog="python -m pdeserve.serving.healthcheck",
        description="Ask a pdeserve server's grpc.health.v1 service whether it is serving.",
    )
    parser.add_argument("--target", default=DEFAULT_TARGET, help="HOST:PORT of the gRPC port")
    parser.add_argument("--service", default="", help="service name (empty: the whole server)")
    parser.add_argument("--timeout", type=float, default=5.0, help="deadline in seconds")
    args = parser.parse_args(argv)
    try:
        status = check(args.target, args.service, args.timeout)
    except grpc.RpcError as exc:
        print(f"{args.target}: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    print(f"{args.target}: {status}")
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    sys.exit(main())
