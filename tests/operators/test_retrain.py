"""Retraining from the CLI: lineage, the regression gate, refusals of missing or changed data, rollback
and concurrent publishers, on a tiny Darcy FNO trained here with the real commands."""

import json
import shutil
import threading
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest

from pdeserve.cli import main
from pdeserve.datagen.dataset import LoadedDataset, load_dataset
from pdeserve.operators import load_model
from pdeserve.operators.card import DatasetRecord, DatasetSummary, GenerationRecipe
from pdeserve.operators.errors import StaleParentError
from pdeserve.operators.evaluation import evaluate
from pdeserve.operators.lineage import LineageError, dataset_path, lineage_data
from pdeserve.operators.repository import ModelRepository, read_card, write_card
from pdeserve.operators.retrain import EXIT_REFUSED, RetrainOptions, combine, retrain
from pdeserve.operators.training import subset

NAME = "tiny"
TINY_FNO = ["--arg", "n_modes=[6,6]", "--arg", "hidden_channels=12", "--arg", "n_layers=2"]


def _versions(repo: Path) -> list[str]:
    return ModelRepository(repo).versions(NAME)


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> tuple[Path, Path]:
    """A repository with version 1 of a tiny FNO trained by `pdeserve train` on 40 Darcy samples at
    32x32 (36 train, 4 held out); and the data file."""
    root = tmp_path_factory.mktemp("retrain")
    data = root / "darcy32.h5"
    assert main(["datagen", "darcy", "--n", "40", "--resolution", "32", "--out", str(data), "--quiet"]) == 0
    train = ["train", "--data", str(data), "--model", "fno", "--repo", str(root / "repo"), "--name", NAME]
    assert main([*train, *TINY_FNO, "--epochs", "12", "--batch-size", "6", "--lr", "5e-3", "--quiet"]) == 0
    return root / "repo", data


@pytest.fixture
def repo(template, tmp_path) -> Path:
    """A copy of the template's repository and its data, laid out alike (lineage paths are relative)."""
    shutil.copytree(template[0], tmp_path / "repo")
    shutil.copy(template[1], tmp_path / template[1].name)
    return tmp_path / "repo"


def test_train_records_its_data_file_in_the_lineage(template):
    repo, data = template
    lineage = read_card(repo / NAME / "1").lineage
    assert lineage.mode == "train" and lineage.parent is None
    assert lineage.command[:2] == ("pdeserve", "train")
    [entry] = lineage.datasets
    loaded = load_dataset(data)
    parameters = {"alpha": 2.0, "coefficient": "piecewise", "contrast": "12/3", "forcing": 1.0, "tau": 3.0}
    assert entry == DatasetRecord(
        path="../darcy32.h5",
        fingerprint=loaded.fingerprint(),
        n_train=36,
        n_validation=0,
        n_test=4,
        seed=0,
        recipe=GenerationRecipe(
            family="darcy",
            parameters={**parameters, "solve_resolution": 32},
            seed=0,
            n=40,
            resolution=32,
            dtype="float32",
            pdeserve_version=loaded.attrs["pdeserve_version"],
        ),
    )


def test_retrain_publishes_version_2_with_lineage_and_gate_numbers(repo, template, capsys):
    args = ["--repo", str(repo), "--model", NAME, "--n", "10", "--epochs", "2", "--quiet"]
    assert main(["datagen", "retrain", *args, "--max-regression", "0.25"]) == 0
    out = capsys.readouterr().out
    assert f"published {NAME} version 2 (parent 1)" in out
    assert _versions(repo) == ["1", "2"]
    parent, child = load_model(repo, NAME, 1), load_model(repo, NAME)
    lineage = child.card.lineage
    assert (lineage.mode, lineage.parent) == ("fine-tune", "1")
    assert lineage.parent_weights_sha256 == parent.card.weights.sha256
    assert lineage.command[:3] == ("pdeserve", "datagen", "retrain")
    old, new = lineage.datasets
    assert old == parent.card.lineage.datasets[0]
    # The new data: 10 samples of the parent's distribution with an unused seed, content-addressed.
    assert (new.seed, new.n_train, new.n_validation, new.n_test) == (1, 9, 0, 1)
    assert new.path == f".data/{NAME}/{new.fingerprint}.h5"
    generated = load_dataset(repo / new.path)
    assert generated.fingerprint() == new.fingerprint and generated.inputs["a"].shape == (10, 32, 32)
    assert json.loads(generated.attrs["parameters_json"]) == parent.card.pde_parameters
    # 36 old + 9 new training samples; the 4 + 1 held-out samples were not trained on.
    assert (child.card.dataset.n_train, child.card.dataset.n_test) == (45, 5)
    # The gate's numbers are each model's error on each dataset's held-out samples, recomputed here.
    gate = lineage.gate
    assert gate.max_regression == 0.25 and [h.new for h in gate.held_out] == [False, True]
    for record, held in zip((old, new), gate.held_out, strict=True):
        test = subset(load_dataset(dataset_path(record, repo)), record.parts()[2])
        assert held.parent == pytest.approx(evaluate(parent, test)["relative_l2"], rel=1e-6)
        assert held.candidate == pytest.approx(evaluate(child, test)["relative_l2"], rel=1e-6)
        assert f"{held.parent:.4f} -> {held.candidate:.4f}" in out
    assert gate.held_out[0].candidate <= 1.25 * gate.held_out[0].parent
    # Fine-tuning kept the parent's normalisers (its weights only mean something with them).
    assert child.card.normalizers == parent.card.normalizers

    # A second retrain finds the first one's generated data through the lineage and draws seed 2.
    assert main(["datagen", "retrain", *args, "--max-regression", "10"]) == 0
    third = load_model(repo, NAME, 3).card.lineage
    assert third.parent == "2" and [d.seed for d in third.datasets] == [0, 1, 2]


def test_forced_regression_is_refused_and_nothing_is_published(repo, capsys):
    # Demanding a 50% improvement from two low-rate epochs cannot be met: an honest refusal.
    args = ["--repo", str(repo), "--model", NAME, "--n", "10", "--epochs", "2", "--quiet"]
    assert main(["datagen", "retrain", *args, "--max-regression", "-0.5"]) == EXIT_REFUSED
    captured = capsys.readouterr()
    lines = [line for line in captured.out.splitlines() if line.startswith("  ") and " -> " in line]
    assert len(lines) == 2 and lines[0].endswith("REFUSED (limit -50.0%)") and "not gated" in lines[1]
    assert "refused" in captured.err and "nothing published" in captured.err
    assert _versions(repo) == ["1"]
    assert not list((repo / NAME).glob(".staging-*"))


def test_retrain_from_scratch_refits_the_normalisers(repo):
    result = retrain(
        RetrainOptions(repo, NAME, n=10, epochs=1, from_scratch=True, max_regression=100.0, progress=False)
    )
    assert (result.parent, result.version) == ("1", "2")
    child, parent = load_model(repo, NAME), load_model(repo, NAME, 1)
    assert child.card.lineage.mode == "from-scratch"
    assert child.card.training.learning_rate == parent.card.training.learning_rate
    assert child.card.normalizers != parent.card.normalizers


def test_an_option_of_another_pde_is_refused_in_one_line(repo, capsys):
    assert main(["datagen", "retrain", "--repo", str(repo), "--model", NAME, "--viscosity", "0.05"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("pdeserve: error: --viscosity does not apply to darcy models") and "\n" not in err
    assert _versions(repo) == ["1"]


def test_missing_or_changed_data_is_refused(template, tmp_path):
    repo, data = template
    card = read_card(repo / NAME / "1")
    copy = tmp_path / "copy.h5"
    shutil.copy(data, copy)
    moved = replace(card.lineage.datasets[0], path=str(copy))
    card = card.replace(lineage=replace(card.lineage, datasets=(moved,)))
    [(record, loaded)] = lineage_data(card, "tiny v1", repo)
    assert loaded.fingerprint() == record.fingerprint
    with h5py.File(copy, "r+") as f:
        f["u"][0, 5, 5] += 1.0  # one value of one sample
    with pytest.raises(LineageError, match=r"copy\.h5 is not the data tiny v1 was trained on"):
        lineage_data(card, "tiny v1", repo)
    copy.unlink()
    with pytest.raises(LineageError, match=r"copy\.h5, which is missing"):
        lineage_data(card, "tiny v1", repo)


def _moved(repo: Path, version: str, **changes) -> DatasetRecord:
    """Rewrite ``version``'s lineage record of its data with ``changes``; returns the original."""
    folder = repo / NAME / version
    card = read_card(folder)
    [record] = card.lineage.datasets
    write_card(folder, card.replace(lineage=replace(card.lineage, datasets=(replace(record, **changes),))))
    return record


def test_retrain_regenerates_a_missing_data_file_from_its_recipe(repo, tmp_path, capsys):
    original = _moved(repo, "1", path=str(tmp_path / "gone.h5"))
    args = ["retrain", "--repo", str(repo), "--model", NAME, "--n", "4", "--epochs", "1", "--quiet"]
    assert main([*args, "--max-regression", "10"]) == 0
    assert "generating 40 darcy samples again from a recorded recipe" in capsys.readouterr().out
    [old, _] = load_model(repo, NAME).card.lineage.datasets
    # The same content, now found in the repository's data folder by the next retrain.
    assert old == replace(original, path=f".data/{NAME}/{original.fingerprint}.h5")
    assert load_dataset(repo / old.path).fingerprint() == original.fingerprint


def test_a_recipe_that_does_not_reproduce_the_data_is_refused(repo, tmp_path, capsys):
    original = _moved(repo, "1", path=str(tmp_path / "gone.h5"))
    _moved(repo, "1", path=str(tmp_path / "gone.h5"), recipe=replace(original.recipe, seed=5))
    assert main(["retrain", "--repo", str(repo), "--model", NAME, "--n", "4", "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith(f"pdeserve: error: {tmp_path / 'gone.h5'} regenerated from")
    assert f"recorded {original.fingerprint[:16]}..." in err
    assert _versions(repo) == ["1"]


def test_a_model_without_lineage_needs_its_own_data_file(template, bundled_repo, tmp_path, capsys):
    legacy = read_card(bundled_repo / "darcy-fno" / "1")
    assert legacy.lineage is None
    with pytest.raises(LineageError, match="pass the file it was trained on with --data"):
        lineage_data(legacy, "darcy-fno v1", bundled_repo)
    # The tiny model's data are not the bundled model's: refused before any work.
    for version in ("1", "2"):  # the versions published before lineage was recorded
        shutil.copytree(bundled_repo / "darcy-fno" / version, tmp_path / "repo" / "darcy-fno" / version)
    args = ["datagen", "retrain", "--repo", str(tmp_path / "repo"), "--model", "darcy-fno"]
    assert main([*args, "--data", str(template[1])]) == 1
    assert "is not the data darcy-fno v2 was trained on" in capsys.readouterr().err
    # With the file it was trained on, the split recorded in its card is used; early cards did not
    # record the validation count: it is what the other splits leave.
    fingerprint = load_dataset(template[1]).fingerprint()
    summary = DatasetSummary(fingerprint=fingerprint, n_samples=40, n_train=34, n_test=4)
    [(record, _)] = lineage_data(legacy.replace(dataset=summary), "x v1", tmp_path, template[1])
    assert (record.n_train, record.n_validation, record.n_test, record.seed) == (34, 2, 4, 0)
    assert not Path(record.path).is_absolute() and record.fingerprint == fingerprint
    assert (tmp_path / record.path).resolve() == template[1].resolve()
    with pytest.raises(LineageError, match="--data is only for versions published before"):
        lineage_data(read_card(template[0] / NAME / "1"), "t", tmp_path, "x.h5")


def test_combine_keeps_each_datasets_split():
    def dataset(offset: int, n: int) -> LoadedDataset:
        marks = np.arange(offset, offset + n, dtype=np.float32)[:, None, None] * np.ones(
            (1, 4, 4), np.float32
        )
        return LoadedDataset({"pde": "darcy"}, {"a": marks}, {"u": -marks})

    first, second = DatasetRecord("a.h5", "x", 6, 2, 2), DatasetRecord("b.h5", "y", 3, 0, 1)
    combined, (train, val, test) = combine(
        [(first, dataset(0, 10)), (second, dataset(100, 4))], {"pde": "darcy"}
    )
    marks = combined.inputs["a"][:, 0, 0].tolist()
    assert marks[train] == [0, 1, 2, 3, 4, 5, 100, 101, 102]
    assert marks[val] == [6, 7]
    assert marks[test] == [8, 9, 103]
    assert (combined.outputs["u"][:, 0, 0] == -combined.inputs["a"][:, 0, 0]).all()
    coarse = LoadedDataset({}, {"a": np.zeros((2, 2, 2))}, {"u": np.zeros((2, 2, 2))})
    with pytest.raises(ValueError, match=r"c\.h5 holds fields .* must share fields, grid"):
        combine([(first, dataset(0, 10)), (DatasetRecord("c.h5", "z", 1, 0, 1), coarse)], {})


def test_rollback_serves_the_old_weights_as_a_new_version(repo, capsys):
    store = ModelRepository(repo)
    store.publish(NAME, lambda folder: shutil.copytree(repo / NAME / "1", folder, dirs_exist_ok=True))
    assert main(["models", "rollback", NAME, "--to", "1", "--repo", str(repo)]) == 0
    assert "published tiny version 3: version 1's weights" in capsys.readouterr().out
    assert store.versions(NAME) == ["1", "2", "3"]
    v1, v3 = load_model(repo, NAME, 1), load_model(repo, NAME)
    assert v3.version == "3" and v3.card.weights == v1.card.weights
    lineage = v3.card.lineage
    assert (lineage.mode, lineage.rollback_of, lineage.replaces) == ("rollback", "1", "2")
    assert lineage.datasets == v1.card.lineage.datasets  # the data those weights saw
    assert main(["models", "list", "--repo", str(repo)]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[2:]}
    assert set(rows) == {"1", "2", "3*"}
    assert rows["3*"].endswith("rollback of 1 (replacing 2)") and rows["1"].endswith("trained")
    assert main(["models", "rollback", NAME, "--to", "3", "--repo", str(repo)]) == 1
    assert "already the newest" in capsys.readouterr().err
    assert main(["models", "rollback", NAME, "--to", "9", "--repo", str(repo)]) == 1
    assert "has no version '9'" in capsys.readouterr().err
    assert store.versions(NAME) == ["1", "2", "3"]


def test_publishers_racing_for_one_number_get_distinct_versions(repo):
    # Both staging folders are complete before either is renamed: a real race for version 2.
    store, barrier, versions = ModelRepository(repo), threading.Barrier(2), []

    def write(folder: Path) -> None:
        shutil.copytree(repo / NAME / "1", folder, dirs_exist_ok=True)
        barrier.wait(timeout=30)

    threads = [threading.Thread(target=lambda: versions.append(store.publish(NAME, write))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(versions) == ["2", "3"] and store.versions(NAME) == ["1", "2", "3"]


def test_concurrent_retrains_of_one_parent_publish_once(repo):
    # Both have loaded version 1 before either publishes: the first publishes 2, the second finds its
    # parent no longer newest and publishes nothing.
    results, refused, barrier = [], [], threading.Barrier(2)
    options = RetrainOptions(repo, NAME, n=8, epochs=1, max_regression=100.0, progress=False)

    def log(line: str) -> None:
        if line.startswith("fine-tuning"):
            barrier.wait(timeout=120)

    def run() -> None:
        try:
            results.append(retrain(options, log))
        except StaleParentError as exc:
            refused.append(str(exc))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [(r.parent, r.version) for r in results] == [("1", "2")]
    assert refused == [
        "tiny version 2 became the newest while a successor of version 1 was made; nothing published: "
        "start again from version 2"
    ]
    assert _versions(repo) == ["1", "2"]
    # Same seed, same content: both lineages name the one content-addressed file.
    assert len(list((repo / ".data" / NAME).glob("*.h5"))) == 1
    assert not list((repo / ".data" / NAME).glob(".generating-*"))
