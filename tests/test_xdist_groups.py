"""`make test`'s two workers run each xdist group on one worker: the session's Ray Serve instance, the C
and Fortran build and every module fixture are built once. pytest-xdist tells a worker's test its group
through the test's id (``NODEID@GROUP``); a pytest that reads ids from elsewhere (9.2 with xdist 3.8)
spreads every group over both workers without a word."""

import pytest


def test_this_test_runs_under_its_file_group(request):
    if not getattr(request.config.option, "loadgroup", False):  # set in each worker by pytest-xdist
        pytest.skip("runs under pytest-xdist's --dist loadgroup (make test)")
    assert request.node.nodeid.endswith("@tests/test_xdist_groups.py"), (
        f"pytest-xdist's group is not in the test's id {request.node.nodeid!r}: the groups are ignored; "
        "install the pytest and pytest-xdist versions constraints.txt pins"
    )
