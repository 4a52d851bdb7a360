import pytest

from pdeserve.datagen.darcy import DarcyParameters
from pdeserve.datagen.dataset import GenerationRequest, load_dataset, write_dataset
from pdeserve.datagen.families import get_family

SMALL_FNO = {"n_modes": [8, 8], "hidden_channels": 16, "n_layers": 3}


@pytest.fixture(scope="session")
def small_darcy(tmp_path_factory):
    """100 Darcy samples at 33x33 (a real dataset file, written by the real writer)."""
    path = tmp_path_factory.mktemp("data") / "darcy33.h5"
    request = GenerationRequest(get_family("darcy"), DarcyParameters(), 100, 33, seed=11)
    return load_dataset(write_dataset(request, path, progress=False))


@pytest.fixture(scope="session")
def trained_small(small_darcy):
    """A small FNO trained briefly on ``small_darcy`` (shared by the operator tests)."""
    from pdeserve.operators.settings import TrainingSettings
    from pdeserve.operators.training import train

    settings = TrainingSettings(epochs=40, batch_size=10, learning_rate=5e-3, test_fraction=0.2, seed=0)
    return train(small_darcy, "fno", SMALL_FNO, settings, progress=False)
