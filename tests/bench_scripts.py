"""The benchmark scripts (``bench/NAME.py``) as the suite uses them: loaded as modules, and their
``--quick`` mode run end to end."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load(name: str) -> ModuleType:
    """``bench/NAME.py`` as a module (the scripts import their siblings, ``common`` and others); settings
    a script makes in the environment at import are undone, so that no later test's processes inherit
    them."""
    environment = dict(os.environ)
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses resolve their annotations through it
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "bench"))
        os.environ.clear()
        os.environ.update(environment)
    return module


def run_quick(name: str, folder: Path) -> tuple[dict, Path]:
    """Run ``bench/NAME.py --quick`` writing into ``folder``: its JSON results and its image folder."""
    out = folder / f"{name}.json"
    subprocess.run(
        [sys.executable, f"bench/{name}.py", "--quick", "--out", str(out), "--img-dir", str(folder / "img")],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=600,
    )
    return json.loads(out.read_text()), folder / "img"
