"""Fixtures of the deployment tests."""

from __future__ import annotations

import pytest
from chart_support import CASES, chart_values, render


@pytest.fixture(scope="session", params=CASES)
def rendered(request) -> tuple[str, dict, list[dict]]:
    """``(case, values, objects)`` for each rendering case."""
    values = chart_values(request.param)
    return request.param, values, render(values)
