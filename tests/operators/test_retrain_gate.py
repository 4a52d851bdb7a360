"""Retraining's guards: non-finite errors fail the gate, a retrain never publishes over a version that
became newest while it ran (a rollback), and old generated data are pruned after a publish. A tiny
Darcy FNO trained here with the real commands."""

import math
import os
import shutil
import time
from pathlib import Path

import pytest

from pdeserve.cli import main
from pdeserve.operators import repository
from pdeserve.operators.card import HeldOut
from pdeserve.operators.errors import StaleParentError
from pdeserve.operators.repository import ModelRepository, read_card
from pdeserve.operators.retrain import RetrainOptions, retrain

NAME = "tiny"
TINY_FNO = ["--arg", "n_modes=[4,4]", "--arg", "hidden_channels=8", "--arg", "n_layers=1"]


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A repository with version 1 of a tiny FNO trained by `pdeserve train` on 20 Darcy samples at
    17x17 (the data outside the repository)."""
    root = tmp_path_factory.mktemp("gate")
    data = root / "darcy17.h5"
    assert main(["datagen", "darcy", "--n", "20", "--resolution", "17", "--out", str(data), "--quiet"]) == 0
    train = ["train", "--data", str(data), "--model", "fno", "--repo", str(root / "repo"), "--name", NAME]
    assert main([*train, *TINY_FNO, "--epochs", "4", "--lr", "5e-3", "--quiet"]) == 0
    return root / "repo"


@pytest.fixture
def repo(template, tmp_path) -> Path:
    """A copy of the template's repository and its data, laid out alike (lineage paths are relative)."""
    shutil.copytree(template, tmp_path / "repo")
    shutil.copy(template.parent / "darcy17.h5", tmp_path / "darcy17.h5")
    return tmp_path / "repo"


def _options(repo: Path, **changes) -> RetrainOptions:
    settings = {"n": 6, "epochs": 1, "max_regression": 100.0, "progress": False, "validation_samples": 0}
    return RetrainOptions(repo, NAME, **{**settings, **changes})


@pytest.mark.parametrize("candidate", [math.nan, math.inf])
@pytest.mark.parametrize("new", [False, True])
def test_a_non_finite_candidate_error_fails_the_gate(candidate, new):
    assert HeldOut("a.h5", "f", 4, parent=0.1, candidate=candidate, new=new).regressed(1e9)
    assert not HeldOut("a.h5", "f", 4, parent=0.1, candidate=0.2, new=new).regressed(1e9)


def test_a_diverged_candidate_is_refused(repo):
    # A learning rate this large overflows the weights: the candidate answers NaN on every set.
    result = retrain(_options(repo, learning_rate=1e30, max_regression=1e9))
    assert result.version is None
    assert [math.isnan(h.candidate) for h in result.held_out] == [True, True]
    assert ModelRepository(repo).versions(NAME) == ["1"]


def test_a_retrain_does_not_publish_over_a_rollback_made_while_it_ran(repo, capsys):
    store = ModelRepository(repo)
    store.publish(NAME, lambda folder: shutil.copytree(repo / NAME / "1", folder, dirs_exist_ok=True))

    def roll_back_while_training(line: str) -> None:
        if line.startswith("fine-tuning"):  # the retrain of version 2 is under way
            assert main(["models", "rollback", NAME, "--to", "1", "--repo", str(repo)]) == 0

    with pytest.raises(StaleParentError) as refused:
        retrain(_options(repo), log=roll_back_while_training)
    assert str(refused.value) == (
        "tiny version 3 became the newest while a successor of version 2 was made; nothing published: "
        "start again from version 3"
    )
    assert store.versions(NAME) == ["1", "2", "3"] and store.resolve(NAME)[0] == "3"
    assert read_card(repo / NAME / "3").lineage.rollback_of == "1"
    assert not list((repo / NAME).glob(".staging-*"))
    # Started again from the rollback, it publishes.
    assert retrain(_options(repo)).version == "4"


def _age(path: Path, seconds: float) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past))


def test_generated_data_no_lineage_names_are_pruned_after_a_publish_keeping_the_newest(repo, monkeypatch):
    monkeypatch.setattr(repository, "STALE_SECONDS", 1.0)
    data = repo / ".data" / NAME
    data.mkdir(parents=True)
    refused = [data / f"refused{i}.h5" for i in range(4)]  # from retrains that published nothing
    for age, path in enumerate(refused):
        path.write_bytes(b"x" * 100)
        _age(path, 100 * (age + 1))
    killed = data / ".generating-killed"
    killed.mkdir()
    (killed / "new.h5.partial").write_bytes(b"x")
    time.sleep(1.1)  # staleness is judged by change time, which cannot be set back: let it age

    result = retrain(_options(repo, keep_data=2))
    assert result.version == "2"
    # The new data (named by version 2's lineage) and the two newest unnamed files stay.
    assert sorted(p.name for p in data.iterdir()) == sorted(
        [result.new_data.name, "refused0.h5", "refused1.h5"]
    )
    assert repo / read_card(repo / NAME / "2").lineage.datasets[-1].path == result.new_data
