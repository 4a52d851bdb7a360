"""docs/families.md's "Try it" runs as written: a plugin family from data to a published model, and a
user's own simulation output imported, trained on and calibrated without a solver."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "families.md"


def _try_it_blocks() -> list[tuple[str, str]]:
    """``(language, code)`` of each fenced block of the "Try it" section, in order."""
    section = DOC.read_text().split("\n## Try it\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(bash|python)\n(.*?)```", section, flags=re.S)


def test_the_try_it_section_runs_as_written(tmp_path):
    pytest.importorskip("pdeserve_allen_cahn", reason="the example plugin is installed by `make install`")
    blocks = _try_it_blocks()
    assert [language for language, _ in blocks] == ["bash", "python", "bash"]
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    outputs = []
    for language, code in blocks:
        command = (
            ["bash", "-euo", "pipefail", "-c", code] if language == "bash" else [sys.executable, "-c", code]
        )
        done = subprocess.run(
            command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, f"{code}\n{done.stdout}\n{done.stderr}"
        outputs.append(done.stdout)
    assert "[from pdeserve-allen-cahn " in outputs[0] and "published ac-fno version 1" in outputs[0]
    calibrated = re.search(
        r"at 90% stated coverage \((\d+) held-out samples\), ([\d.]+)% measured", outputs[2]
    )
    assert calibrated and int(calibrated[1]) == 10 and 0 <= float(calibrated[2]) <= 100, outputs[2]
    assert "validated and calibrated 1" in outputs[2]
