"""Fixtures of the multi-node tests: a Ray cluster of separate node processes on this machine."""

from __future__ import annotations


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "cluster: starts its own multi-node Ray cluster with `ray start`")
