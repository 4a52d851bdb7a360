"""The command line: help with examples, and one-line errors with a non-zero exit."""

import subprocess
import sys
from pathlib import Path

import pytest


def pdeserve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pdeserve.serving.cli", *args], capture_output=True, text=True
    )


@pytest.mark.parametrize(
    "command", [[], ["datagen"], ["datagen", "darcy"], ["train"], ["eval"], ["serve"], ["solve"]]
)
def test_every_command_has_help_with_examples(command):
    done = pdeserve(*command, "--help")
    assert done.returncode == 0
    assert "usage: pdeserve" in done.stdout
    if command and command != ["datagen"]:
        assert "examples:" in done.stdout, command


def test_datagen_list_names_the_families_and_options():
    done = pdeserve("datagen", "list")
    assert done.returncode == 0
    families = [line.split(":")[0] for line in done.stdout.splitlines() if not line.startswith(" ")]
    assert families == ["burgers", "darcy", "navier-stokes", "helmholtz"]
    assert (
        "--solve-resolution" in done.stdout and "--viscosity" in done.stdout and "--contrast" in done.stdout
    )


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["frobnicate"], 2, "invalid choice: 'frobnicate'"),
        (
            ["train", "--data", "missing.h5", "--model", "fno", "--repo", "r", "--name", "m"],
            1,
            "no such dataset file",
        ),
        (
            ["train", "--data", "x.h5", "--model", "fno", "--repo", "r", "--name", "a/b"],
            1,
            "invalid model name",
        ),
        (
            ["train", "--data", "x.h5", "--model", "unet", "--repo", "r", "--name", "m"],
            2,
            "invalid choice: 'unet'",
        ),
        (["eval", "--repo", "nowhere", "--name", "m", "--data", "x.h5"], 1, "unknown model 'm'"),
        (["serve", "--repo", "nowhere"], 1, "no published models"),
        (["serve", "--repo", "nowhere", "--replicas", "0"], 1, "--replicas must be at least 1, got 0"),
        (["solve", "--model", "m", "--input", "missing.npy"], 1, "no such input file"),
    ],
)
def test_errors_are_one_line_and_non_zero(tmp_path, args, code, message):
    done = subprocess.run(
        [sys.executable, "-m", "pdeserve.serving.cli", *args], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == code
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert lines[0].startswith("pdeserve")


def test_datagen_script_equals_pdeserve_datagen():
    """The installed ``datagen`` script has every ``pdeserve datagen`` subcommand, retrain included."""
    script = Path(sys.executable).with_name("datagen")
    ours = subprocess.run([script, "--help"], capture_output=True, text=True)
    theirs = pdeserve("datagen", "--help")
    assert ours.returncode == theirs.returncode == 0
    choices = "{list,inspect,burgers,darcy,navier-stokes,helmholtz,retrain}"
    assert choices in " ".join(ours.stdout.split()) and choices in " ".join(theirs.stdout.split())
    refused = subprocess.run(
        [script, "darcy", "--n", "-1", "--resolution", "64", "--out", "x.h5"], capture_output=True, text=True
    )
    assert refused.returncode == 1
    assert refused.stderr.strip() == "datagen: error: --n must be at least 1, got -1"
