import ast
import json
import threading
from pathlib import Path

import numpy as np
import pytest

from pdeserve.operators import load_model
from pdeserve.operators.errors import CheckpointError, InvalidInputError
from pdeserve.operators.repository import ModelNotFoundError, ModelRepository
from pdeserve.operators.training import publish

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def published(tmp_path, trained_small):
    surrogate, _ = trained_small
    version = publish(tmp_path, "darcy-small", surrogate)
    return tmp_path, version, surrogate


def test_save_load_round_trip_predicts_identically(published, small_darcy):
    repo, version, surrogate = published
    assert version == "1"
    loaded = load_model(repo, "darcy-small")
    a = small_darcy.inputs["a"][:4]
    np.testing.assert_array_equal(loaded.predict({"a": a})["u"], surrogate.predict({"a": a})["u"])
    single = loaded.predict({"a": a[0]})["u"]
    assert single.shape == (33, 33) and single.dtype == np.float32
    np.testing.assert_allclose(single, loaded.predict({"a": a})["u"][0], atol=1e-6)
    assert loaded.card.architecture == "fno" and loaded.card.arguments["n_modes"] == [8, 8]
    assert loaded.card.metrics == surrogate.card.metrics and loaded.card.history == surrogate.card.history
    assert loaded.card.parameter_count == surrogate.parameter_count() > 0


def test_repository_layout_is_safetensors_and_json(published):
    repo, version, _ = published
    files = sorted(p.name for p in (repo / "darcy-small" / version).iterdir())
    assert files == ["config.json", "model.safetensors"]
    config = json.loads((repo / "darcy-small" / version / "config.json").read_text())
    assert {"architecture", "arguments", "normalizers", "dataset", "weights", "pde", "metrics"} <= set(config)
    assert config["schema_version"] == 2 and len(config["dataset"]["fingerprint"]) == 64


def test_tampered_or_truncated_weights_are_refused(published):
    repo, version, _ = published
    weights = repo / "darcy-small" / version / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match the checksum"):
        load_model(repo, "darcy-small")
    weights.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(CheckpointError, match="modified or truncated"):
        load_model(repo, "darcy-small")


def test_versions_increase_and_concurrent_publishers_never_share_one(tmp_path, trained_small):
    surrogate, _ = trained_small
    versions: list[str] = []
    threads = [
        threading.Thread(target=lambda: versions.append(publish(tmp_path, "m", surrogate))) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(versions, key=int) == ["1", "2", "3", "4"]
    repo = ModelRepository(tmp_path)
    assert repo.versions("m") == ["1", "2", "3", "4"] and repo.resolve("m")[0] == "4"
    assert load_model(tmp_path, "m", 2).version == "2"
    assert not [p for p in (tmp_path / "m").iterdir() if p.name.startswith(".staging")]


def test_unknown_model_or_version_is_a_lookup_error(published):
    repo, _, _ = published
    with pytest.raises(ModelNotFoundError, match="published models: darcy-small"):
        load_model(repo, "nope")
    with pytest.raises(ModelNotFoundError, match="no version '9'"):
        load_model(repo, "darcy-small", "9")
    with pytest.raises(ModelNotFoundError):
        load_model(repo, "../etc")


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"b": np.ones((33, 33))}, "expects input fields"),
        ({"a": np.ones(33)}, "must have rank 2"),
        ({"a": np.ones((2, 33, 33), dtype=np.int64)}, "float32 or float64"),
        ({"a": np.ones((4, 4))}, "every grid side must be between 8 and"),
        ({"a": np.full((33, 33), np.inf)}, "NaN or Inf"),
        ({"a": np.ones((0, 33, 33))}, "is empty"),
    ],
)
def test_bad_inputs_name_what_was_expected(trained_small, inputs, message):
    surrogate, _ = trained_small
    with pytest.raises(InvalidInputError, match=message):
        surrogate.predict(inputs)


def test_no_module_unpickles_and_layers_import_one_way():
    """Checkpoints are safetensors + JSON only; datagen -> operators -> serving, never backwards, and
    the command line (the composition root) is imported by none of them."""
    forbidden_calls = {"torch.load", "pickle.load", "pickle.loads", "cloudpickle.load"}
    layers = {
        "datagen": set(),
        "operators": {"datagen"},
        "serving": {"datagen", "operators"},
        "cli": {"datagen", "operators", "serving"},
    }
    for package, allowed in layers.items():
        for path in (ROOT / package).rglob("*.py"):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                    name = ast.unparse(node.func)
                    assert name not in forbidden_calls, f"{path}: {name}"
                if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pdeserve."):
                    layer = node.module.split(".")[1]
                    assert layer in allowed | {package, "protos"}, f"{path} imports {node.module}"
