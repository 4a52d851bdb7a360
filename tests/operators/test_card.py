"""The model card: a JSON round trip keeps every typed field; unknown schema versions, missing fields
and legacy (format_version 1) configs are handled with one clear error or read as cards."""

import json

import pytest

from pdeserve.operators.card import (
    DatasetRecord,
    EpochRecord,
    Gate,
    HeldOut,
    Lineage,
    ModelCard,
    TimeMap,
    Weights,
)
from pdeserve.operators.errors import CheckpointError
from pdeserve.operators.repository import read_card, write_card


@pytest.fixture(scope="module")
def legacy(bundled_repo) -> ModelCard:
    return read_card(bundled_repo / "darcy-fno" / "1")


@pytest.fixture
def full(legacy) -> ModelCard:
    """The bundled card with every optional part filled in."""
    record = DatasetRecord("data/a.h5", "f" * 64, 8, 1, 1, seed=3)
    held = HeldOut("data/a.h5", "f" * 64, 1, parent=0.1, candidate=0.09, new=False)
    return legacy.replace(
        time_map=TimeMap(2, 1),
        weights=Weights("model.safetensors", "0" * 64),
        history=(EpochRecord(1, 0.5, 1e-3, 2.0), EpochRecord(2, 0.4, 5e-4, 2.1, val_relative_l2=0.3)),
        lineage=Lineage(
            mode="fine-tune",
            datasets=(record,),
            command=("pdeserve", "retrain"),
            parent="1",
            parent_weights_sha256="0" * 64,
            gate=Gate(0.02, (held,)),
        ),
    )


def test_bundled_legacy_card_loads(legacy):
    assert (legacy.architecture, legacy.pde, legacy.dims) == ("fno", "darcy", ("x", "y"))
    assert legacy.input_names == ["a"] and legacy.output_names == ["u"] and legacy.ndim == 2
    assert legacy.training_resolution == (64, 64) and legacy.training.epochs == 40
    assert legacy.metrics["test_relative_l2"] < 0.05  # from its metrics.json
    assert legacy.parameter_count > 0 and legacy.lineage is None and legacy.time_map is None
    assert legacy.weights.file == "model.safetensors"


def test_round_trip_keeps_every_field(full, tmp_path):
    text = full.to_json()
    assert json.loads(text)["schema_version"] == 2
    assert ModelCard.from_json(text) == full
    write_card(tmp_path, full)
    assert read_card(tmp_path) == full


def test_unknown_schema_version_is_refused(full):
    document = json.loads(full.to_json())
    document["schema_version"] = 3
    with pytest.raises(CheckpointError, match=r"x\.json has schema_version 3; this pdeserve reads .* 2"):
        ModelCard.from_json(json.dumps(document), "x.json")


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (("pde",), r"config\.json: missing fields \['pde'\]"),
        (("normalizers", "inputs", "std"), r"config\.json\.normalizers\.inputs: missing fields \['std'\]"),
        (("lineage", "datasets", 0, "fingerprint"), r"lineage\.datasets\[0\]: .*\['fingerprint'\]"),
    ],
)
def test_a_missing_field_is_refused_by_name(full, tmp_path, path, message):
    document = json.loads(full.to_json())
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    del parent[path[-1]]
    (tmp_path / "config.json").write_text(json.dumps(document))
    with pytest.raises(CheckpointError, match=message):
        read_card(tmp_path)


def test_a_field_of_the_wrong_type_is_refused(full):
    document = json.loads(full.to_json())
    document["parameter_count"] = "many"
    with pytest.raises(CheckpointError, match=r"parameter_count: expected int, got 'many'"):
        ModelCard.from_json(json.dumps(document))


def test_a_newer_card_of_the_same_schema_is_read_with_its_extra_fields_ignored(full, tmp_path):
    """An older replica reads a card that a newer pdeserve extended within schema 2."""
    document = json.loads(full.to_json())
    document["router_ledger"] = {"surrogate": [0.01, 0.02]}
    document["normalizers"]["inputs"]["skew"] = [0.0]
    (tmp_path / "config.json").write_text(json.dumps(document))
    assert read_card(tmp_path) == full


def test_the_family_source_round_trips_and_is_omitted_when_unset(full):
    from pdeserve.operators.card import FamilySource

    assert "family" not in json.loads(full.to_json())
    plugin = full.replace(family=FamilySource("pdeserve-allen-cahn", "1.2.0"))
    assert ModelCard.from_json(plugin.to_json()) == plugin and plugin.family.has_solver
    imported = full.replace(family=FamilySource(None, None, "the-well"))
    assert ModelCard.from_json(imported.to_json()).family == FamilySource(None, None, "the-well")
    assert not imported.family.has_solver
