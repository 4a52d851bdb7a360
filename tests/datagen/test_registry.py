"""The family registry reads the `pdeserve.families` entry points of every installed distribution: a
broken plugin is listed with its reason and never takes the other families (or any command) down, and
a plugin cannot take a built-in family's name over."""

import subprocess
import sys
from pathlib import Path

# A plugin module: a family built from the Darcy family with another name or parameters.
PLUGIN = """
import dataclasses
from pdeserve.datagen.builtin_families import DARCY

@dataclasses.dataclass(frozen=True)
class Clashing:
    seed: int = 3  # `datagen NAME --seed` is datagen's own option

    def as_dict(self):
        return dataclasses.asdict(self)

CLASHING = dataclasses.replace(DARCY, name="clashing", parameters=Clashing)
IMPOSTOR = DARCY  # claims the built-in name "darcy"
GOOD = dataclasses.replace(DARCY, name="good-darcy")
"""


def _install_fake(site: Path, entries: dict[str, str]) -> None:
    """A distribution ``fake-plugin 1.0`` on ``site`` (a path entry) with ``entries`` (name -> object)."""
    (site / "fake_plugin.py").write_text(PLUGIN)
    info = site / "fake_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-plugin\nVersion: 1.0\n")
    lines = "\n".join(f"{name} = {target}" for name, target in entries.items())
    (info / "entry_points.txt").write_text(f"[pdeserve.families]\n{lines}\n")


def _pdeserve(site: Path, *args: str) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-m", "pdeserve.cli", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_broken_plugins_are_listed_and_the_other_families_and_commands_work(tmp_path):
    _install_fake(
        tmp_path,
        {
            "clashing": "fake_plugin:CLASHING",
            "darcy": "fake_plugin:IMPOSTOR",
            "missing": "fake_plugin_gone:FAMILY",
            "good-darcy": "fake_plugin:GOOD",
        },
    )
    listed = _pdeserve(tmp_path, "datagen", "list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    loaded = {
        line.split(":")[0]: line for line in lines if not line.startswith(" ") and "NOT LOADED" not in line
    }
    assert loaded["good-darcy"].endswith("[from fake-plugin 1.0]")
    assert "[from pdeserve " in loaded["darcy"]  # the built-in keeps its name
    broken = [line for line in lines if "NOT LOADED" in line]
    reasons = {line.split(":")[0]: line for line in broken}
    assert set(reasons) == {"clashing", "darcy", "missing"}
    assert "clash with datagen's own" in reasons["clashing"] and "--seed" in reasons["clashing"]
    assert "registered by more than one distribution: fake-plugin, pdeserve" in reasons["darcy"]
    assert "ModuleNotFoundError" in reasons["missing"]
    # Every command line still builds: the broken families have no command, the good one has.
    helped = _pdeserve(tmp_path, "datagen", "--help")
    assert helped.returncode == 0 and "good-darcy" in helped.stdout and "clashing" not in helped.stdout
    assert _pdeserve(tmp_path, "retrain", "--help").returncode == 0
