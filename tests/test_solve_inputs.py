"""What ``pdeserve solve --input`` sends: a trajectory dataset's first states for a model of several
states (read from a real Navier-Stokes file), the dataset's own inputs for a one-state model."""

import numpy as np
import pytest

from pdeserve.cli.solve import _read_inputs
from pdeserve.datagen.dataset import GenerationRequest, load_dataset, write_dataset
from pdeserve.datagen.families import get_family
from pdeserve.datagen.navier_stokes import NavierStokesParameters
from pdeserve.protos.v1 import solver_pb2 as pb


@pytest.fixture(scope="module")
def trajectories(tmp_path_factory):
    """Two Navier-Stokes trajectories at 16x16, states at t = 0, 1, 2, 3."""
    parameters = NavierStokesParameters(time_step=0.01, final_time=3.0, record_every=1.0)
    request = GenerationRequest(get_family("navier-stokes"), parameters, 2, 16, seed=1)
    return write_dataset(request, tmp_path_factory.mktemp("solve") / "ns16.h5", progress=False)


def _info(*names: str) -> pb.ModelInfo:
    return pb.ModelInfo(name="ns", inputs=[pb.FieldSpec(name=n) for n in names])


def test_a_model_of_several_states_gets_each_trajectorys_first_states(trajectories):
    data = load_dataset(trajectories)
    inputs, truth = _read_inputs(trajectories, _info("w@t=0", "w@t=1", "w@t=2"))
    assert list(inputs) == ["w@t=0", "w@t=1", "w@t=2"] and list(truth) == ["w@t=3"]
    np.testing.assert_array_equal(inputs["w@t=0"], data.inputs["w0"])
    np.testing.assert_array_equal(inputs["w@t=2"], data.outputs["w"][:, 1])
    np.testing.assert_array_equal(truth["w@t=3"], data.outputs["w"][:, 2])
    assert inputs["w@t=1"].shape == (2, 16, 16)


def test_a_one_state_model_gets_the_datasets_inputs(trajectories):
    inputs, truth = _read_inputs(trajectories, _info("w0"))
    assert list(inputs) == ["w0"] and truth["w"].shape == (2, 3, 16, 16)


@pytest.mark.parametrize(
    "names",
    [("w@t=0", "w@t=0.5"), ("w@t=0", "w@t=1", "w@t=2", "w@t=3"), ("a",)],
    ids=["other-times", "too-many-states", "other-field"],
)
def test_states_the_dataset_does_not_hold_are_refused(trajectories, names):
    with pytest.raises(ValueError, match=r"has inputs \['w0'\]: pass the model's inputs in an \.npz"):
        _read_inputs(trajectories, _info(*names))
