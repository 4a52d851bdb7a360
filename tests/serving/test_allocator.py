"""The replica's malloc settings apply where the C library is glibc (Linux images and this machine)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt thresholds are glibc's")
def test_freed_memory_is_retained_on_glibc():
    # In a fresh interpreter: the thresholds are process-wide.
    code = "from pdeserve.serving.allocator import retain_freed_memory; print(retain_freed_memory())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
