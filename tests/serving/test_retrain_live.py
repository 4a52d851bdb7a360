"""Retraining against a live server: `pdeserve datagen retrain` publishes version 2 while clients call
Solve through the real Ray Serve gRPC proxy; the new version is served without a restart and without a
failed request; a refused candidate changes nothing; `pdeserve models rollback` serves version 1's
weights again."""

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from pdeserve.cli import main
from pdeserve.datagen.darcy import DarcyParameters, darcy_sample
from pdeserve.operators import load_model
from pdeserve.operators.retrain import EXIT_REFUSED
from pdeserve.serving.client import SolverClient, SolverError

NAME = "darcy-live"
APP = "retrain-live"
pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """Version 1 of a tiny FNO trained by `pdeserve train` on 40 Darcy samples at 32x32."""
    root = tmp_path_factory.mktemp("live")
    data = root / "darcy32.h5"
    assert main(["datagen", "darcy", "--n", "40", "--resolution", "32", "--out", str(data), "--quiet"]) == 0
    args = ["train", "--data", str(data), "--model", "fno", "--repo", str(root / "repo"), "--name", NAME]
    tiny = ["--arg", "n_modes=[6,6]", "--arg", "hidden_channels=12", "--arg", "n_layers=2"]
    assert main([*args, *tiny, "--epochs", "12", "--batch-size", "6", "--lr", "5e-3", "--quiet"]) == 0
    return root / "repo"


def test_retrain_is_served_without_restart_refusal_changes_nothing_rollback_works(deploy_app, repo, capsys):
    target = deploy_app(APP, repo)
    field = darcy_sample(DarcyParameters(), 32, np.random.default_rng(3))["a"].astype(np.float32)
    failures, seen, stop = [], {0: [], 1: []}, threading.Event()

    def load(i: int) -> None:  # light load: two clients calling back to back, no version named
        with SolverClient(target, application=APP) as c:
            while not stop.is_set():
                try:
                    seen[i].append(c.solve_response(NAME, {"a": field}).version)
                except SolverError as exc:
                    failures.append(exc)
                time.sleep(0.02)

    def wait_for(version: str) -> None:
        deadline = time.monotonic() + 60
        while not all(s and s[-1] == version for s in seen.values()) and time.monotonic() < deadline:
            time.sleep(0.1)

    workers = [threading.Thread(target=load, args=(i,)) for i in seen]
    for w in workers:
        w.start()
    try:
        wait_for("1")
        retrain = ["datagen", "retrain", "--repo", str(repo), "--model", NAME, "--n", "10", "--quiet"]
        assert main([*retrain, "--epochs", "2", "--max-regression", "0.25"]) == 0
        assert "published darcy-live version 2 (parent 1)" in capsys.readouterr().out
        wait_for("2")
        # Refused: a 50% improvement demanded of one epoch; the server keeps serving version 2.
        assert main([*retrain, "--epochs", "1", "--max-regression", "-0.5"]) == EXIT_REFUSED
        assert "nothing published" in capsys.readouterr().err
        assert main(["models", "rollback", NAME, "--to", "1", "--repo", str(repo)]) == 0
        wait_for("3")
    finally:
        stop.set()
        for w in workers:
            w.join()
    assert not failures, failures[:3]
    for versions in seen.values():
        # Each client saw 1, then 2, then 3, never going back: the swaps were clean.
        assert versions[0] == "1" and versions[-1] == "3"
        assert versions == sorted(versions) and {"1", "2", "3"} >= set(versions)

    with SolverClient(target, application=APP) as c:
        info = c.get_model(NAME)
        assert info.version == "3" and list(info.versions) == ["1", "2", "3"]
        v2 = c.get_model(NAME, version="2")
        card = load_model(repo, NAME, 2).card
        assert v2.dataset_fingerprint == card.dataset.fingerprint
        assert v2.metrics["test_relative_l2"] == pytest.approx(card.metrics["test_relative_l2"])
        # Without a version: version 3 = version 1's weights; version 2 on request.
        newest = c.solve_response(NAME, {"a": field})
        assert newest.version == "3"
        expected = {v: load_model(repo, NAME, v).predict({"a": field})["u"] for v in ("1", "2")}
        np.testing.assert_allclose(c.solve(NAME, {"a": field})["u"], expected["1"], atol=1e-5)
        np.testing.assert_allclose(c.solve(NAME, {"a": field}, version="2")["u"], expected["2"], atol=1e-5)
        assert np.abs(expected["1"] - expected["2"]).max() > 1e-4  # the retrain changed the weights
