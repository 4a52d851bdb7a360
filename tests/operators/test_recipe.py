"""Generation recipes in a model's lineage: recorded from the data file's attributes, decoded from cards
with and without one, and regenerating the recorded data bit for bit (real datagen, real HDF5)."""

import json
import os
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from pdeserve.datagen.dataset import load_dataset, write_dataset
from pdeserve.operators.card import DatasetRecord
from pdeserve.operators.lineage import (
    LineageError,
    dataset_record,
    generation_recipe,
    generation_request,
    regenerated_dataset,
)
from pdeserve.operators.repository import ModelRepository, read_card

BUNDLED = Path(__file__).resolve().parents[2] / "models"


def _regenerate(folder: Path):
    """A ``Regenerate`` writing into ``folder`` with the real writer."""

    def regenerate(request):
        path = write_dataset(request, folder / f"regenerated-{request.seed}.h5", progress=False)
        return path, load_dataset(path)

    return regenerate


@pytest.fixture(scope="module")
def navier_stokes(tmp_path_factory) -> tuple[Path, DatasetRecord]:
    """Three short Navier-Stokes trajectories at 16x16 with non-default options, written by the CLI
    writer's request type, and their lineage record."""
    from pdeserve.datagen.dataset import GenerationRequest
    from pdeserve.datagen.families import get_family
    from pdeserve.datagen.navier_stokes import NavierStokesParameters

    root = tmp_path_factory.mktemp("recipe")
    parameters = NavierStokesParameters(
        viscosity=2e-3, time_step=0.01, final_time=2.0, record_every=0.5, forcing_amplitude=0.2
    )
    request = GenerationRequest(get_family("navier-stokes"), parameters, 3, 16, seed=4, dtype="float64")
    path = write_dataset(request, root / "ns16.h5", progress=False)
    return root, dataset_record(path, load_dataset(path), 0, 1, root)


def test_the_recipe_holds_every_option_the_file_was_generated_with(navier_stokes):
    _, record = navier_stokes
    recipe = record.recipe
    assert (recipe.family, recipe.seed, recipe.n, recipe.resolution, recipe.dtype) == (
        "navier-stokes",
        4,
        3,
        16,
        "float64",
    )
    assert recipe.parameters["viscosity"] == 2e-3 and recipe.parameters["forcing_amplitude"] == 0.2
    assert (recipe.parameters["final_time"], recipe.parameters["record_every"]) == (2.0, 0.5)
    assert recipe.parameters["time_step"] == 0.01 and recipe.solve_resolution == 16
    assert recipe.pdeserve_version and record.seed == 4


def test_the_recipe_regenerates_the_recorded_fingerprint(navier_stokes, tmp_path):
    _, record = navier_stokes
    path, data = regenerated_dataset(record, "ns v1", _regenerate(tmp_path))
    assert data.fingerprint() == record.fingerprint and data.outputs["w"].shape == (3, 4, 16, 16)
    assert path.parent == tmp_path


@pytest.mark.parametrize(
    ("change", "value"), [("seed", 5), ("n", 2), ("viscosity", 1e-3), ("record_every", 1.0)]
)
def test_a_recipe_that_does_not_reproduce_the_data_is_refused(navier_stokes, tmp_path, change, value):
    _, record = navier_stokes
    recipe = record.recipe
    if change in recipe.parameters:
        recipe = replace(recipe, parameters={**recipe.parameters, change: value})
    else:
        recipe = replace(recipe, **{change: value})
    with pytest.raises(LineageError, match=rf"recorded {record.fingerprint[:16]}\.\.\."):
        regenerated_dataset(replace(record, recipe=recipe), "ns v1", _regenerate(tmp_path))


def test_a_record_without_a_recipe_cannot_be_regenerated(navier_stokes, tmp_path):
    _, record = navier_stokes
    with pytest.raises(LineageError, match="records no generation recipe"):
        regenerated_dataset(replace(record, recipe=None), "ns v1", _regenerate(tmp_path))


def test_cards_written_before_recipes_decode_with_none(navier_stokes):
    from pdeserve.operators.card import decode

    _, record = navier_stokes
    with_recipe = json.loads(json.dumps(asdict(record)))
    document = {k: v for k, v in with_recipe.items() if k != "recipe"}
    assert decode(DatasetRecord, document, "config.json") == replace(record, recipe=None)
    assert decode(DatasetRecord, with_recipe, "config.json") == record
    # A field a newer writer added within the schema is ignored.
    assert (
        decode(DatasetRecord, {**with_recipe, "recipe": {**with_recipe["recipe"], "solver": "x"}}, "c")
        == record
    )


def test_data_combined_in_memory_have_no_recipe(navier_stokes):
    root, _ = navier_stokes
    data = load_dataset(root / "ns16.h5")
    assert generation_recipe(data) is not None
    attrs = {k: v for k, v in data.attrs.items() if k != "parameters_json"}
    assert generation_recipe(replace(data, attrs=attrs)) is None


def _bundled_recipes() -> list[tuple[str, str, DatasetRecord]]:
    """Every dataset record with a recipe in the bundled repository's cards, once per fingerprint."""
    repo, seen, found = ModelRepository(BUNDLED), set(), []
    for name in repo.names():
        for version in repo.versions(name):
            lineage = read_card(BUNDLED / name / version).lineage
            for record in lineage.datasets if lineage else ():
                if record.recipe is not None and record.fingerprint not in seen:
                    seen.add(record.fingerprint)
                    found.append((name, version, record))
    return found


def test_the_bundled_ns_model_records_the_recipe_of_make_bundled_ns_model():
    [record] = [r for name, _, r in _bundled_recipes() if name == "ns-fno"]
    recipe = record.recipe
    assert (recipe.family, recipe.seed, recipe.n, recipe.resolution, recipe.dtype) == (
        "navier-stokes",
        0,
        192,
        64,
        "float32",
    )
    assert {k: recipe.parameters[k] for k in ("viscosity", "final_time", "record_every", "time_step")} == {
        "viscosity": 1e-3,
        "final_time": 10.0,
        "record_every": 1.0,
        "time_step": 0.0033,
    }
    assert recipe.solve_resolution == 64 and record.n_samples == 192


# Models whose data take minutes to generate on a 2-core CPU (ns-fno: 192 trajectories of 3000 solver
# steps; allen-cahn-fno: 1024 reaction-diffusion solves, 4.5 min); PDESERVE_SLOW_TESTS=1 regenerates them.
SLOW_TO_REGENERATE = {"ns-fno", "allen-cahn-fno"}
SLOW = pytest.mark.skipif(
    os.environ.get("PDESERVE_SLOW_TESTS") != "1", reason="minutes of data generation: PDESERVE_SLOW_TESTS=1"
)


@pytest.mark.parametrize(
    ("name", "version", "record"),
    [
        pytest.param(
            *entry, id=f"{entry[0]}-v{entry[1]}", marks=[SLOW] if entry[0] in SLOW_TO_REGENERATE else []
        )
        for entry in _bundled_recipes()
    ],
)
def test_bundled_recipes_regenerate_their_recorded_fingerprints(name, version, record, tmp_path):
    request = generation_request(record.recipe)
    assert request.n == record.n_samples
    _, data = regenerated_dataset(record, f"{name} v{version}", _regenerate(tmp_path))
    assert data.fingerprint() == record.fingerprint
