"""Every registered operator on every dataset family its dimension fits: config round trip, a short
training run that beats the mean predictor, and save/load equality through the model repository."""

import json

import numpy as np
import pytest

from pdeserve.datagen.burgers import BurgersParameters
from pdeserve.datagen.darcy import DarcyParameters
from pdeserve.datagen.dataset import GenerationRequest, load_dataset, write_dataset
from pdeserve.datagen.families import get_family
from pdeserve.operators import load_model
from pdeserve.operators.registry import ARCHITECTURES, config_arguments, get_architecture, make_config
from pdeserve.operators.repository import ModelRepository
from pdeserve.operators.settings import TrainingSettings
from pdeserve.operators.training import publish, train

# Small widths so that each model trains in seconds on two CPU cores.
TINY = {
    "fno": {"n_modes": [8, 8], "hidden_channels": 12, "n_layers": 2},
    "tfno": {"n_modes": [8, 8], "hidden_channels": 12, "n_layers": 2, "rank": 0.5},
    "mgno": {"channels": 8, "n_layers": 2, "levels": 3},
    "galerkin": {
        "d_model": 16,
        "n_heads": 2,
        "n_layers": 2,
        "dim_feedforward": 32,
        "modes": 6,
        "regressor_width": 12,
        "regressor_hidden": 12,
        "downscale": 2,
    },
}
TINY_1D = {
    "fno": {"n_modes": [16], "hidden_channels": 12, "n_layers": 2},
    "tfno": {"n_modes": [16], "hidden_channels": 12, "n_layers": 2, "rank": 0.5},
    "galerkin": {
        "d_model": 16,
        "n_heads": 1,
        "n_layers": 2,
        "dim_feedforward": 32,
        "modes": 8,
        "regressor_width": 12,
        "regressor_hidden": 12,
    },
}
RECIPE = {"epochs": 12, "batch_size": 4, "learning_rate": 3e-3, "test_fraction": 0.2, "seed": 0}


@pytest.fixture(scope="module")
def dataset_files(tmp_path_factory):
    """A small 2D (Darcy) and 1D (Burgers) dataset file, by grid dimension."""
    folder = tmp_path_factory.mktemp("zoo")
    darcy = GenerationRequest(get_family("darcy"), DarcyParameters(), 40, 32, seed=1)
    burgers = GenerationRequest(
        get_family("burgers"), BurgersParameters(solve_resolution=256), 40, 64, seed=1
    )
    return {
        2: write_dataset(darcy, folder / "darcy.h5", progress=False),
        1: write_dataset(burgers, folder / "burgers.h5", progress=False),
    }


@pytest.fixture(scope="module")
def datasets(dataset_files):
    return {ndim: load_dataset(path) for ndim, path in dataset_files.items()}


def _fits(name: str, ndim: int) -> bool:
    try:
        get_architecture(name).default_arguments(ndim, "dirichlet")
    except ValueError:
        return False
    return True


CASES = [(name, ndim) for name in ARCHITECTURES for ndim in (1, 2) if _fits(name, ndim)]


def test_every_architecture_has_tiny_settings_for_each_dimension_it_fits():
    assert {name for name, ndim in CASES if ndim == 2} <= set(TINY)
    assert {name for name, ndim in CASES if ndim == 1} <= set(TINY_1D)
    assert {"fno", "tfno", "mgno", "galerkin"} <= set(ARCHITECTURES)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_config_survives_a_json_round_trip(name):
    arch = get_architecture(name)
    ndim = 2 if _fits(name, 2) else 1
    config = make_config(
        name, {**arch.default_arguments(ndim, "periodic"), "in_channels": 2, "out_channels": 3}
    )
    recorded = json.loads(json.dumps(config_arguments(config)))
    assert make_config(name, recorded) == config


@pytest.mark.parametrize(("name", "ndim"), CASES)
def test_short_training_beats_the_mean_predictor_and_reloads_identically(name, ndim, datasets, tmp_path):
    data = datasets[ndim]
    arguments = (TINY if ndim == 2 else TINY_1D)[name]
    surrogate, metrics = train(data, name, arguments, TrainingSettings(**RECIPE), progress=False)
    losses = [e.train_loss for e in surrogate.card.history]
    assert losses[-1] < 0.8 * losses[0], losses
    assert metrics["test_relative_l2"] < 0.8 * metrics["baseline_mean_relative_l2"], metrics
    publish(tmp_path, name, surrogate)
    loaded = load_model(tmp_path, name)
    assert loaded.card.architecture == name and loaded.card.metrics == metrics
    field = data.attrs["input_fields"][0]
    x = data.inputs[field][:3]
    np.testing.assert_array_equal(
        loaded.predict({field: x})[loaded.output_names[0]],
        surrogate.predict({field: x})[surrogate.output_names[0]],
    )


def test_mgno_refuses_a_grid_it_cannot_coarsen_and_names_the_nearest_sides(small_darcy):
    with pytest.raises(ValueError, match=r"divisible by 8 \(nearest to 33: 32 or 40\)"):
        train(small_darcy, "mgno", {"levels": 4}, TrainingSettings(epochs=1), progress=False)
    with pytest.raises(ValueError, match="MgNO supports 2D grids only, not 1D"):
        get_architecture("mgno").default_arguments(1, "periodic")


GALERKIN_RECIPE = {"learning_rate": 1e-3, "scheduler": "onecycle", "onecycle_div": 1e4, "grad_clip": 0.99}


@pytest.mark.parametrize(
    ("name", "ndim", "flags", "expected"),
    [
        ("galerkin", 2, [], GALERKIN_RECIPE),  # its paper's recipe from the registry
        ("galerkin", 1, [], GALERKIN_RECIPE),
        ("fno", 2, [], {"learning_rate": 1e-3, "scheduler": "cosine", "grad_clip": 0.0, "batch_size": 20}),
        (
            "galerkin",
            2,
            ["--lr", "5e-4", "--grad-clip", "0"],  # explicit flags win, the recipe fills the rest
            {**GALERKIN_RECIPE, "learning_rate": 5e-4, "grad_clip": 0.0},
        ),
    ],
)
def test_train_cli_trains_with_the_models_recipe_unless_told_otherwise(
    name, ndim, flags, expected, dataset_files, tmp_path
):
    from pdeserve.cli import main

    tiny = TINY[name] if ndim == 2 else TINY_1D[name]
    command = ["train", "--data", str(dataset_files[ndim]), "--model", name, "--repo", str(tmp_path)]
    command += ["--name", "m", "--epochs", "1", "--quiet", "--device", "cpu", *flags]
    for key, value in tiny.items():
        command += ["--arg", f"{key}={json.dumps(value)}"]
    assert main(command) == 0
    _, card = ModelRepository(tmp_path).card("m")
    assert {key: getattr(card.training, key) for key in expected} == pytest.approx(expected)
