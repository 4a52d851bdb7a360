"""Helpers shared by the benchmark scripts (run as ``python bench/NAME.py``: ``import common``)."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import torch


def resolve_device(choice: str) -> tuple[str, str]:
    """``("cuda"|"cpu", human-readable device name)`` for ``--device auto|cpu|cuda``."""
    device = choice if choice != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name() if device == "cuda" else f"{platform.machine()} CPU"
    return device, name


def write_results(path: str | Path, payload: dict[str, Any]) -> None:
    """Write a benchmark's JSON results, creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
