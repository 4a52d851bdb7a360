"""``pdeserve models list`` lists every version it can read, marks the ones it cannot, and then fails."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pdeserve.cli import main
from pdeserve.operators.repository import ModelRepository

NAME = "darcy-fno"


@pytest.fixture
def repo(bundled_repo: Path, bundled_versions: list[str], tmp_path: Path) -> Path:
    """Two versions of the bundled model: the older intact, the newer with a corrupt card."""
    good, bad = bundled_versions[-2:]
    for version in (good, bad):
        shutil.copytree(bundled_repo / NAME / version, tmp_path / NAME / version)
    (tmp_path / NAME / bad / "config.json").write_text("{not json")
    return tmp_path


def rows(stdout: str) -> dict[str, str]:
    """The version rows of the listing, by version (the served marker stripped)."""
    lines = [line.split(maxsplit=1) for line in stdout.splitlines() if line.startswith("  ")]
    return {version.rstrip("*"): rest for version, rest in lines if version != "version"}


def test_lists_readable_versions_and_fails_for_an_unreadable_card(repo: Path, bundled_versions):
    good, bad = bundled_versions[-2:]
    done = subprocess.run(
        [sys.executable, "-m", "pdeserve.cli", "models", "list", "--repo", str(repo)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1, done.stderr
    listed = rows(done.stdout)
    assert sorted(listed, key=int) == [good, bad]
    assert listed[good].split()[1] == "0.0200"  # its held-out error, read from its card
    assert listed[bad].startswith("unreadable card: ")
    assert "not valid JSON" in listed[bad]
    assert f"{good}*" in done.stdout  # the intact version is the one served
    assert "Traceback" not in done.stdout + done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last == "pdeserve: error: 1 of 2 model cards could not be read (the rows marked 'unreadable card')"


def test_missing_card_is_listed_and_the_other_models_still_are(repo: Path, bundled_repo, capsys):
    shutil.copytree(bundled_repo / "ns-fno" / "1", repo / "ns-fno" / "1")
    (repo / "ns-fno" / "1" / "config.json").unlink()
    assert main(["models", "list", "--repo", str(repo)]) == 1
    out, err = capsys.readouterr()
    assert out.count("unreadable card: ") == 2
    assert "unreadable card: ns-fno/1/config.json is missing" in out
    assert err.strip().splitlines()[-1].startswith("pdeserve: error: 2 of 3 model cards could not be read")


def test_served_version_unknown_when_resolving_fails(repo: Path, bundled_versions, capsys, monkeypatch):
    good, _ = bundled_versions[-2:]

    def unreadable(self, name, version=None):
        if version is None:
            raise PermissionError(13, "Permission denied", str(self.root / name))
        return version, self.root / name / str(version)

    monkeypatch.setattr(ModelRepository, "resolve", unreadable)
    assert main(["models", "list", "--repo", str(repo)]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines()[0].startswith(f"{NAME} (served version unknown: [Errno 13] Permission denied")
    assert rows(out)[good].split()[1] == "0.0200"
    assert "*" not in out
    assert len(err.strip().splitlines()) == 1


def test_unknown_model_is_still_one_error(repo: Path, capsys):
    assert main(["models", "list", "--repo", str(repo), "nope"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("pdeserve: error: unknown model 'nope'")
