"""A classical solver's refusal of an input is the client's fault (INVALID_ARGUMENT); any other failure
of a solver is the server's (INTERNAL, logged and counted), through the one RPC wrapper and the one table
of serving/errors.py."""

import asyncio

import grpc
import numpy as np
import pytest

from pdeserve.datagen import darcy
from pdeserve.datagen.errors import SolverRefusal
from pdeserve.operators.repository import read_card
from pdeserve.serving import checks
from pdeserve.serving.errors import as_request_error
from pdeserve.serving.rpc import rpc


class Context:
    """The part of a gRPC servicer context the wrapper uses."""

    def __init__(self) -> None:
        self.code = self.details = None

    def invocation_metadata(self):
        return []

    def set_code(self, code):
        self.code = code

    def set_details(self, details):
        self.details = details


class Metrics:
    def __init__(self) -> None:
        self.codes = []

    def request(self, method, model, version, code, started):
        self.codes.append(code)


class Service:
    """A servicer whose Solve runs the classical reference of the bundled Darcy model's card."""

    auth_token = ""

    def __init__(self, card) -> None:
        self.card, self.metrics = card, Metrics()
        self.response_types = {"Solve": str}  # the empty answer of a refused call

    def published(self, name):
        return ("1",)

    @rpc(model_fields=("model", "version"))
    async def Solve(self, request, call):
        checks.classical_reference(self.card, {"a": request.a})
        return "answered"


class Request:
    model, version = "darcy-fno", ""

    def __init__(self, a: np.ndarray) -> None:
        self.a = a


@pytest.fixture
def service(bundled_repo):
    return Service(read_card(bundled_repo / "darcy-fno" / "1"))


def solve(service, a):
    context = Context()
    asyncio.run(service.Solve(Request(a), context))
    return context


def test_a_refused_input_is_an_invalid_argument(service):
    context = solve(service, np.full((17, 17), -1.0))
    assert context.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "cannot take this input" in context.details and "strictly positive" in context.details
    assert service.metrics.codes == [grpc.StatusCode.INVALID_ARGUMENT]


def test_a_solver_bug_is_internal_and_counted(service, monkeypatch):
    def broken(self, a, f):
        raise RuntimeError("index 3 is out of bounds in /srv/solver.py")

    monkeypatch.setattr(darcy.DarcySolver, "solve", broken)
    context = solve(service, np.full((17, 17), 5.0))
    assert context.code == grpc.StatusCode.INTERNAL
    assert "/srv" not in context.details and "RuntimeError" in context.details
    assert service.metrics.codes == [grpc.StatusCode.INTERNAL]


def test_a_value_error_that_is_no_refusal_is_internal():
    assert as_request_error(ValueError("a bug"), "Solve").code == grpc.StatusCode.INTERNAL
    assert as_request_error(SolverRefusal("no"), "Solve").code == grpc.StatusCode.INVALID_ARGUMENT
