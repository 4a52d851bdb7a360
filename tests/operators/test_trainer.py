"""Trainer features: resume, reproducibility, early stopping, schedules, losses, trajectories, DDP, eval."""

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from pdeserve.datagen.dataset import LoadedDataset, write_dataset
from pdeserve.operators.card import TimeMap
from pdeserve.operators.checkpoint import tensor_state
from pdeserve.operators.pairs import operator_pairs
from pdeserve.operators.repository import read_card
from pdeserve.operators.settings import TrainingSettings
from pdeserve.operators.training import publish, train
from pdeserve.operators.training_state import read_state

TINY_FNO = {"n_modes": [6, 6], "hidden_channels": 8, "n_layers": 2}


@pytest.fixture(scope="module")
def tiny_darcy(small_darcy):
    """The first 30 samples of the shared Darcy set: enough to exercise the trainer in seconds."""
    return LoadedDataset(
        small_darcy.attrs,
        {k: v[:30] for k, v in small_darcy.inputs.items()},
        {k: v[:30] for k, v in small_darcy.outputs.items()},
    )


def _settings(**kwargs):
    return TrainingSettings(**{"batch_size": 5, "learning_rate": 5e-3, "test_fraction": 0.2, **kwargs})


def _pdeserve(*args, env=None, **kwargs):
    return subprocess.Popen(
        [sys.executable, "-m", "pdeserve.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        **kwargs,
    )


def test_same_seed_gives_identical_weights(tiny_darcy):
    first, _ = train(tiny_darcy, "fno", TINY_FNO, _settings(epochs=2), progress=False)
    second, _ = train(tiny_darcy, "fno", TINY_FNO, _settings(epochs=2), progress=False)
    other, _ = train(tiny_darcy, "fno", TINY_FNO, _settings(epochs=2, seed=1), progress=False)
    a, b, c = (
        {k: v for k, v in s.model.state_dict().items() if isinstance(v, torch.Tensor)}
        for s in (first, second, other)
    )
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_sigkilled_training_resumes_and_ends_with_the_uninterrupted_weights(tmp_path):
    data = tmp_path / "darcy.h5"
    from pdeserve.datagen.darcy import DarcyParameters
    from pdeserve.datagen.dataset import GenerationRequest
    from pdeserve.datagen.families import get_family

    write_dataset(
        GenerationRequest(get_family("darcy"), DarcyParameters(), 30, 17, seed=4), data, progress=False
    )
    common = ["train", "--data", str(data), "--model", "fno", "--epochs", "40", "--batch-size", "5"]
    common += ["--arg", "n_modes=[6,6]", "--arg", "hidden_channels=8", "--arg", "n_layers=2", "--quiet"]
    whole = _pdeserve(*common, "--repo", str(tmp_path / "a"), "--name", "m")
    assert whole.wait(120) == 0, whole.stderr.read()
    folder = tmp_path / "b" / ".training" / "m"
    run = _pdeserve(*common, "--repo", str(tmp_path / "b"), "--name", "m")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        # Never caught half-written: the state is one file, written beside and renamed.
        state = read_state(folder)
        if state is not None and state.epoch >= 3:
            break
        time.sleep(0.01)
    run.send_signal(signal.SIGKILL)
    run.wait(30)
    killed_at = read_state(folder).epoch
    assert 3 <= killed_at < 40
    resumed = _pdeserve(*common, "--repo", str(tmp_path / "b"), "--name", "m", "--resume")
    assert resumed.wait(120) == 0
    assert f"resuming from {folder} after epoch {killed_at} of 40" in resumed.stderr.read()
    a = load_file(str(tmp_path / "a" / "m" / "1" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "m" / "1" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not folder.exists()  # the training state is removed once the model is published


def test_resumed_run_with_a_validation_split_publishes_the_best_epochs_weights(tiny_darcy, tmp_path):
    # The step schedule does not depend on the number of epochs (nor does a checkpoint's identity), so
    # a run of fewer epochs resumed with more is the uninterrupted run, stopped where the test chooses:
    # after the best validation epoch, before the early stop.
    settings = _settings(epochs=40, learning_rate=2e-2, val_fraction=0.2, patience=2, scheduler="step")
    whole, metrics = train(tiny_darcy, "fno", TINY_FNO, settings, progress=False)
    best = int(metrics["best_epoch"])
    assert metrics["epochs"] == best + 2  # stopped early, so later epochs were worse
    folder = tmp_path / "state"
    first = replace(settings, epochs=best + 1)
    train(tiny_darcy, "fno", TINY_FNO, first, progress=False, checkpoint_dir=folder)
    assert (read_state(folder).epoch, read_state(folder).best_epoch) == (best + 1, best)
    resumed, again = train(
        tiny_darcy, "fno", TINY_FNO, settings, progress=False, checkpoint_dir=folder, resume=True
    )
    assert (again["epochs"], again["best_epoch"]) == (metrics["epochs"], best)
    publish(tmp_path / "repo", "m", resumed)
    published = load_file(str(tmp_path / "repo" / "m" / "1" / "model.safetensors"))
    expected = tensor_state(whole.model)
    assert published.keys() == expected.keys()
    assert all(torch.equal(published[k], expected[k]) for k in expected)
    assert again["test_relative_l2"] == metrics["test_relative_l2"]


def test_early_stopping_keeps_the_best_validation_epoch(tiny_darcy):
    # A learning rate of zero never improves on epoch 1, so patience 2 stops after epoch 3.
    settings = _settings(epochs=50, learning_rate=0.0, val_fraction=0.2, patience=2)
    surrogate, metrics = train(tiny_darcy, "fno", TINY_FNO, settings, progress=False)
    assert metrics["epochs"] == 3.0 and metrics["best_epoch"] == 1.0
    assert [e.epoch for e in surrogate.card.history] == [1, 2, 3]
    assert surrogate.card.dataset.n_validation == 6


def test_onecycle_warms_up_then_anneals_and_h1_loss_trains(tiny_darcy):
    settings = _settings(epochs=6, scheduler="onecycle", loss="h1")
    surrogate, _ = train(tiny_darcy, "fno", TINY_FNO, settings, progress=False)
    rates = [e.learning_rate for e in surrogate.card.history]
    peak = int(np.argmax(rates))
    assert 0 < peak < 5 and rates[-1] < 1e-2 * max(rates)
    losses = [e.train_loss for e in surrogate.card.history]
    assert all(b < a for a, b in itertools.pairwise(losses)), losses


def test_onecycle_starts_at_its_divided_rate_and_clipping_bounds_the_steps(tiny_darcy):
    from pdeserve.operators.trainer import make_scheduler

    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    make_scheduler(TrainingSettings(scheduler="onecycle", onecycle_div=1e4), optimizer, steps_per_epoch=10)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-7)
    # Adam is blind to the gradients' scale until they fall below its epsilon: clipped to a norm of
    # 1e-12 (and no weight decay, which Adam adds after clipping), the weights move a tiny fraction of
    # what the unclipped run moves them.
    start, _ = train(tiny_darcy, "fno", TINY_FNO, _settings(epochs=1, learning_rate=0.0), progress=False)
    moved = {}
    for clip in (0.0, 1e-12):
        trained, _ = train(
            tiny_darcy, "fno", TINY_FNO, _settings(epochs=1, grad_clip=clip, weight_decay=0.0), progress=False
        )
        before, after = start.model.state_dict(), trained.model.state_dict()
        moved[clip] = max(
            float((after[k] - before[k]).abs().max())
            for k in before
            if isinstance(before[k], torch.Tensor) and before[k].is_floating_point()
        )
    assert moved[0.0] > 1e-3 and moved[1e-12] < 1e-2 * moved[0.0], moved


def test_h1_loss_weighs_gradients_and_l2_does_not():
    from pdeserve.operators.trainer import make_loss

    x = torch.linspace(0, 1, 33)
    target = (torch.sin(torch.pi * x)[:, None] * torch.sin(torch.pi * x)[None, :])[None, None]
    offset = target + 0.1  # same gradient: only the L2 part of the H1 norm sees the error
    wiggle = target + 0.1 * torch.sin(8 * torch.pi * x)[None, None, :, None]  # a large gradient error
    l2, h1 = make_loss("l2", 2, periodic=False), make_loss("h1", 2, periodic=False)
    assert float(h1(offset, target)) < 0.5 * float(l2(offset, target))
    assert float(h1(wiggle, target)) > 3 * float(l2(wiggle, target))


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="needs a validation split"):
        TrainingSettings(patience=3)
    with pytest.raises(ValueError, match="scheduler must be one of cosine, step, onecycle"):
        TrainingSettings(scheduler="linear")
    with pytest.raises(ValueError, match="loss must be one of l2, h1"):
        TrainingSettings(loss="l1")
    with pytest.raises(ValueError, match="onecycle div must be at least 1 and grad clip not negative"):
        TrainingSettings(grad_clip=-1.0)


@pytest.fixture(scope="module")
def small_navier_stokes(tmp_path_factory):
    from pdeserve.datagen.dataset import GenerationRequest, load_dataset
    from pdeserve.datagen.families import get_family
    from pdeserve.datagen.navier_stokes import NavierStokesParameters

    params = NavierStokesParameters(final_time=4.0, record_every=1.0, time_step=1e-2)
    path = tmp_path_factory.mktemp("ns") / "ns.h5"
    request = GenerationRequest(get_family("navier-stokes"), params, 12, 16, seed=2)
    return load_dataset(write_dataset(request, path, progress=False))


def test_trajectory_pairs_name_each_state_by_its_time(small_navier_stokes):
    data = small_navier_stokes
    whole = operator_pairs(data)
    assert whole.x.shape == (12, 1, 16, 16) and whole.y.shape == (12, 4, 16, 16)
    assert [f.name for f in whole.inputs] == ["w0"] and whole.time_map == TimeMap(1, 4)
    assert [f.name for f in whole.outputs] == ["w@t=1", "w@t=2", "w@t=3", "w@t=4"]
    step = operator_pairs(data, TimeMap(input_steps=2, output_steps=1))
    assert [f.name for f in step.inputs] == ["w@t=0", "w@t=1"]
    assert [f.name for f in step.outputs] == ["w@t=2"]
    np.testing.assert_array_equal(step.x[:, 1], data.outputs["w"][:, 0])
    np.testing.assert_array_equal(step.y[:, 0], data.outputs["w"][:, 1])
    with pytest.raises(ValueError, match="do not fit the 5 stored states"):
        operator_pairs(data, TimeMap(input_steps=4, output_steps=2))


def test_next_step_model_trains_on_a_trajectory_dataset(small_navier_stokes, tmp_path):
    from pdeserve.operators.evaluation import evaluate
    from pdeserve.operators.surrogate import load_model

    settings = _settings(epochs=15, test_fraction=0.25)
    surrogate, metrics = train(small_navier_stokes, "fno", TINY_FNO, settings, False, time_map=TimeMap(2, 1))
    assert surrogate.card.time_map == TimeMap(2, 1)
    assert metrics["test_relative_l2"] < metrics["baseline_mean_relative_l2"]
    publish(tmp_path, "ns", surrogate)
    loaded = load_model(tmp_path, "ns")
    assert loaded.input_names == ["w@t=0", "w@t=1"]
    # The classical reference of a next-step model starts from its first input (t = 0) and returns the
    # state at its output time: for a dataset sample it reproduces the stored state.
    from pdeserve.operators.pairs import reference_outputs

    pairs = operator_pairs(small_navier_stokes, TimeMap(2, 1))
    inputs = {name: pairs.x[0, i] for i, name in enumerate(f.name for f in pairs.inputs)}
    truth = reference_outputs(loaded.card, inputs)
    np.testing.assert_allclose(truth["w@t=2"], pairs.y[0, 0], rtol=1e-4, atol=1e-5)
    assert evaluate(loaded, small_navier_stokes)["relative_l2"] == pytest.approx(
        evaluate(surrogate, small_navier_stokes)["relative_l2"], rel=1e-6
    )


def test_eval_reports_each_resolution_and_writes_a_figure(trained_small, small_darcy, tmp_path):
    from PIL import Image

    from pdeserve.datagen.darcy import DarcyParameters
    from pdeserve.datagen.dataset import GenerationRequest
    from pdeserve.datagen.families import get_family

    surrogate, _ = trained_small
    publish(tmp_path / "repo", "darcy", surrogate)
    fine = tmp_path / "darcy65.h5"
    write_dataset(
        GenerationRequest(get_family("darcy"), DarcyParameters(), 8, 65, seed=5), fine, progress=False
    )
    coarse = tmp_path / "darcy33.h5"
    write_dataset(
        GenerationRequest(get_family("darcy"), DarcyParameters(), 8, 33, seed=5), coarse, progress=False
    )
    png = tmp_path / "eval.png"
    run = _pdeserve(
        "eval",
        "--repo",
        str(tmp_path / "repo"),
        "--name",
        "darcy",
        "--data",
        str(coarse),
        "--data",
        str(fine),
        "--json",
        "--plot",
        str(png),
        "--samples",
        "2",
    )
    out, err = run.communicate(timeout=120)
    assert run.returncode == 0, err
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [r["resolution"] for r in rows] == [33.0, 65.0]
    # Zero-shot super-resolution: the 33x33 model still beats the mean predictor by far at 65x65.
    assert rows[0]["relative_l2"] < 0.15 and rows[1]["relative_l2"] < 0.3, rows
    with Image.open(png) as image:
        assert image.size == (1280, 560)  # 2 rows of input / truth / prediction / error


@pytest.mark.skipif(
    shutil.which("torchrun") is None
    and not os.path.exists(os.path.join(os.path.dirname(sys.executable), "torchrun")),
    reason="torchrun is not installed",
)
def test_torchrun_trains_data_parallel_on_two_processes_and_publishes_once(tmp_path):
    from pdeserve.datagen.darcy import DarcyParameters
    from pdeserve.datagen.dataset import GenerationRequest
    from pdeserve.datagen.families import get_family

    data = tmp_path / "darcy.h5"
    write_dataset(
        GenerationRequest(get_family("darcy"), DarcyParameters(), 24, 17, seed=4), data, progress=False
    )
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    run = subprocess.run(
        [
            torchrun,
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "pdeserve.cli",
            "train",
            "--data",
            str(data),
            "--model",
            "fno",
            "--repo",
            str(tmp_path / "repo"),
            "--name",
            "ddp",
            "--epochs",
            "3",
            "--batch-size",
            "4",
            "--device",
            "cpu",
            "--quiet",
            "--arg",
            "n_modes=[6,6]",
            "--arg",
            "hidden_channels=8",
            "--arg",
            "n_layers=2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.count("published ddp version 1") == 1
    assert sorted(p.name for p in (tmp_path / "repo" / "ddp").iterdir()) == ["1"]
    card = read_card(tmp_path / "repo" / "ddp" / "1")
    # Each of the 2 processes takes half of the 19 training samples per epoch (the odd one dropped).
    assert len(card.history) == 3
