"""Integrity of the model repository and the training state: card paths, flushes around renames, the
newest *intact* version, SIGTERM and stale staging, a full disk, torn training state, non-finite data.
Real files: the bundled model's versions copied into a temporary repository, real subprocesses."""

import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import pytest
import torch

from pdeserve.cli import main
from pdeserve.datagen.darcy import DarcyParameters
from pdeserve.datagen.dataset import GenerationRequest, write_dataset
from pdeserve.datagen.families import get_family
from pdeserve.operators import load_model, repository
from pdeserve.operators.errors import CheckpointError, StaleParentError
from pdeserve.operators.repository import CARD_FILE, ModelRepository, read_card
from pdeserve.operators.training_state import STATE, TrainingState, load_state, read_state, save_state

NAME = "darcy-fno"


@pytest.fixture
def repo(bundled_repo, tmp_path) -> Path:
    """A copy of versions 1 and 2 of the bundled darcy-fno."""
    for version in ("1", "2"):
        shutil.copytree(bundled_repo / NAME / version, tmp_path / "repo" / NAME / version)
    return tmp_path / "repo"


def _copy_of(source: Path):
    def write(folder: Path) -> None:
        shutil.copytree(source, folder, dirs_exist_ok=True)

    return write


def _staging(repo: Path) -> list[str]:
    return sorted(p.name for p in (repo / NAME).glob(".staging-*"))


@pytest.mark.parametrize(
    "file", ["../model.safetensors", "/etc/passwd", "sub/model.safetensors", "..", "", "a\\b"]
)
def test_a_card_naming_weights_outside_its_folder_is_refused(repo, file):
    card = repo / NAME / "2" / CARD_FILE
    document = json.loads(card.read_text())
    document["weights"]["file"] = file
    card.write_text(json.dumps(document))
    with pytest.raises(CheckpointError, match="is not a bare file name"):
        read_card(repo / NAME / "2")


def _fd_path(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


def _record_flushes(monkeypatch) -> list[tuple[str, ...]]:
    """Each fsync (by path) and rename, in order; the calls themselves go through."""
    events: list[tuple[str, ...]] = []
    fsync, rename, replace = os.fsync, os.rename, os.replace

    def spy_fsync(fd):
        events.append(("fsync", _fd_path(fd)))
        fsync(fd)

    def spy_rename(source, target):
        events.append(("rename", str(source), str(target)))
        rename(source, target)

    def spy_replace(source, target):
        events.append(("rename", str(source), str(target)))
        replace(source, target)

    monkeypatch.setattr(os, "fsync", spy_fsync)
    monkeypatch.setattr(os, "rename", spy_rename)
    monkeypatch.setattr(os, "replace", spy_replace)
    return events


def test_publish_flushes_files_and_staging_before_the_rename_and_the_model_folder_after(repo, monkeypatch):
    events = _record_flushes(monkeypatch)
    assert ModelRepository(repo).publish(NAME, _copy_of(repo / NAME / "2")) == "3"
    [rename] = [i for i, e in enumerate(events) if e[0] == "rename"]
    staging = events[rename][1]
    assert events[rename][2] == str(repo / NAME / "3")
    before = {e[1] for e in events[:rename]}
    assert {f"{staging}/model.safetensors", f"{staging}/{CARD_FILE}", staging} <= before
    assert ("fsync", str(repo / NAME)) in events[rename + 1 :]


def test_newest_is_the_newest_intact_version(repo, caplog):
    store = ModelRepository(repo)
    assert store.publish(NAME, _copy_of(repo / NAME / "2")) == "3"
    assert store.resolve(NAME) == ("3", repo / NAME / "3")
    weights = repo / NAME / "3" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated
    with caplog.at_level(logging.WARNING, logger="pdeserve.operators.repository"):
        assert store.resolve(NAME)[0] == "2"
    assert "darcy-fno version 3 is damaged" in caplog.text and "checksum" in caplog.text
    assert load_model(repo, NAME).version == "2" and store.card(NAME)[0] == "2"
    # A half-copied version (its card, no weights yet) and one with a broken card are skipped too.
    (repo / NAME / "4").mkdir()
    shutil.copy(repo / NAME / "2" / CARD_FILE, repo / NAME / "4")
    shutil.copytree(repo / NAME / "2", repo / NAME / "5")
    (repo / NAME / "5" / CARD_FILE).write_text('{"schema_version": 2, "architec')
    assert store.versions(NAME) == ["1", "2", "3", "4", "5"] and store.resolve(NAME)[0] == "2"
    # A version can still be asked for by number: it fails as a damaged checkpoint when loaded.
    with pytest.raises(CheckpointError, match="does not match the checksum"):
        load_model(repo, NAME, 3)
    # Repaired in place: the cache sees the new file and serves it again.
    shutil.copy(repo / NAME / "2" / "model.safetensors", weights)
    shutil.rmtree(repo / NAME / "4")
    shutil.rmtree(repo / NAME / "5")
    assert store.resolve(NAME)[0] == "3"
    # None intact: the highest is named, and loading it says what is wrong.
    for version in ("1", "2", "3"):
        (repo / NAME / version / "model.safetensors").write_bytes(b"")
    assert store.resolve(NAME)[0] == "3"
    with pytest.raises(CheckpointError, match="does not match the checksum"):
        load_model(repo, NAME)


def test_resolving_the_newest_hashes_its_weights_once_per_file_state(repo, monkeypatch):
    calls = []
    digest = hashlib.file_digest

    def counting(handle, name):
        calls.append(name)
        return digest(handle, name)

    monkeypatch.setattr(hashlib, "file_digest", counting)
    store = ModelRepository(repo)
    for _ in range(50):
        assert store.resolve(NAME)[0] == "2"
        assert ModelRepository(repo).resolve(NAME)[0] == "2"  # a new instance shares the cache
    assert len(calls) == 1
    (repo / NAME / "2" / "model.safetensors").write_bytes(b"x")  # changed: checked again, then skipped
    assert store.resolve(NAME)[0] == "1" and store.resolve(NAME)[0] == "1"
    assert len(calls) == 3


_PUBLISH_AND_WAIT = textwrap.dedent(
    """
    import shutil, sys, time
    from pathlib import Path
    from pdeserve.operators.repository import ModelRepository

    repo, marker = Path(sys.argv[1]), Path(sys.argv[2])

    def write(folder):
        shutil.copytree(repo / "darcy-fno" / "2", folder, dirs_exist_ok=True)
        marker.touch()
        time.sleep(120)

    ModelRepository(repo).publish("darcy-fno", write)
    """
)


def test_sigterm_while_staging_removes_the_staging_folder(repo, tmp_path):
    marker = tmp_path / "staged"
    process = subprocess.Popen([sys.executable, "-c", _PUBLISH_AND_WAIT, str(repo), str(marker)])
    deadline = time.monotonic() + 60
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists() and len(_staging(repo)) == 1
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 128 + signal.SIGTERM  # exited through SystemExit, not killed
    assert _staging(repo) == [] and ModelRepository(repo).versions(NAME) == ["1", "2"]


def test_stale_staging_folders_are_removed_at_the_next_publish(repo, monkeypatch):
    monkeypatch.setattr(repository, "STALE_SECONDS", 1.0)
    old, fresh = repo / NAME / ".staging-killed", repo / NAME / ".staging-running"
    shutil.copytree(repo / NAME / "2", old)
    time.sleep(1.5)
    shutil.copytree(repo / NAME / "2", fresh)  # keeps the source's modification times: still fresh
    assert ModelRepository(repo).publish(NAME, _copy_of(repo / NAME / "1")) == "3"
    assert _staging(repo) == [".staging-running"]


def _limit_file_size() -> None:
    import resource

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG from write() instead of being killed
    resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))  # the weights are 2.8 MB


def test_a_full_disk_while_publishing_leaves_no_version_and_keeps_serving_the_newest(repo):
    command = [sys.executable, "-m", "pdeserve.cli", "models", "rollback", NAME, "--to", "1"]
    result = subprocess.run(
        [*command, "--repo", str(repo)], capture_output=True, text=True, preexec_fn=_limit_file_size
    )
    assert result.returncode == 1, result.stderr
    assert "File too large" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    store = ModelRepository(repo)
    assert store.versions(NAME) == ["1", "2"] and _staging(repo) == []
    assert store.resolve(NAME)[0] == "2" and load_model(repo, NAME).version == "2"
    assert main(["models", "rollback", NAME, "--to", "1", "--repo", str(repo)]) == 0  # space again
    assert store.resolve(NAME)[0] == "3"


def test_publishing_on_a_parent_that_is_no_longer_newest_is_refused(repo):
    store = ModelRepository(repo)
    assert store.publish(NAME, _copy_of(repo / NAME / "2"), parent="2") == "3"
    with pytest.raises(StaleParentError, match=r"darcy-fno version 3 became the newest .* start again"):
        store.publish(NAME, _copy_of(repo / NAME / "2"), parent="2")
    assert store.versions(NAME) == ["1", "2", "3"] and _staging(repo) == []


def _state(epoch: int) -> tuple[TrainingState, dict]:
    model = torch.nn.Linear(4, 4)
    torch.nn.init.constant_(model.weight, float(epoch))
    return TrainingState(epoch=epoch, identity={"run": "x"}), {"model": model}


def test_training_state_is_flushed_before_its_rename_and_the_rename_after(tmp_path, monkeypatch):
    events = _record_flushes(monkeypatch)
    save_state(tmp_path, *_state(1))
    partial, final = str(tmp_path / (STATE + ".partial")), str(tmp_path / STATE)
    assert events == [("fsync", partial), ("rename", partial, final), ("fsync", str(tmp_path))]


_SAVE_A_LARGER_STATE = textwrap.dedent(
    """
    import sys, torch
    from pathlib import Path
    from pdeserve.operators.training_state import TrainingState, save_state

    save_state(Path(sys.argv[1]), TrainingState(epoch=4), {"model": torch.nn.Linear(1000, 1000)})
    """
)


def test_a_save_cut_short_keeps_the_last_state_and_a_torn_state_is_refused(tmp_path):
    state, components = _state(3)
    save_state(tmp_path, state, components)
    # The next epoch's save fails half-way through its 4 MB (the file-size limit is 1 MB).
    command = [sys.executable, "-c", _SAVE_A_LARGER_STATE, str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, preexec_fn=_limit_file_size)
    assert result.returncode == 1 and "File too large" in result.stderr
    restored = {"model": torch.nn.Linear(4, 4)}
    assert load_state(tmp_path, restored).epoch == 3
    assert restored["model"].weight[0, 0].item() == 3.0
    # A state file cut short otherwise (copied while written) is refused, never half-loaded.
    path = tmp_path / STATE
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match=r"state\.safetensors is damaged .* train without --resume"):
        read_state(tmp_path)


def _tiny_data(path: Path) -> Path:
    request = GenerationRequest(get_family("darcy"), DarcyParameters(), 12, 17, seed=5)
    return write_dataset(request, path, progress=False)


TINY = ["--model", "fno", "--arg", "n_modes=[4,4]", "--arg", "hidden_channels=4", "--arg", "n_layers=1"]


def test_resuming_from_a_torn_training_state_is_one_line(tmp_path, capsys):
    data = _tiny_data(tmp_path / "d.h5")
    folder = ModelRepository(tmp_path / "repo").training_folder("m")
    folder.mkdir(parents=True)
    (folder / STATE).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    args = ["train", "--data", str(data), *TINY, "--repo", str(tmp_path / "repo"), "--name", "m"]
    assert main([*args, "--epochs", "1", "--resume", "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "is damaged" in err and "without --resume" in err


def test_training_on_non_finite_data_is_refused_naming_the_field(tmp_path, capsys):
    data = _tiny_data(tmp_path / "d.h5")
    with h5py.File(data, "r+") as f:
        f["u"][7, 3, 3] = float("nan")
        f["u"][9, 0, 0] = float("inf")
    args = ["train", "--data", str(data), *TINY, "--repo", str(tmp_path / "repo"), "--name", "m"]
    assert main([*args, "--epochs", "1", "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        "pdeserve: error: the dataset's field 'u' holds NaN or Inf values in 2 of 12 samples "
        "(first: sample 7); models are trained and evaluated on finite data only"
    )
    assert ModelRepository(tmp_path / "repo").versions("m") == []
