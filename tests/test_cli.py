"""The command line: help with examples, and one-line errors with a non-zero exit."""

import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest


def pdeserve(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pdeserve.cli", *args], capture_output=True, text=True, cwd=cwd
    )


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["datagen"],
        ["datagen", "darcy"],
        ["datagen", "retrain"],
        ["train"],
        ["retrain"],
        ["eval"],
        ["models"],
        ["models", "list"],
        ["models", "rollback"],
        ["models", "validate"],
        ["serve"],
        ["serve-config"],
        ["solve"],
    ],
)
def test_every_command_has_help_with_examples(command):
    done = pdeserve(*command, "--help")
    assert done.returncode == 0
    assert "usage: pdeserve" in done.stdout
    if command and command != ["datagen"]:
        assert "examples:" in done.stdout, command


def test_datagen_list_names_the_families_their_origin_and_options():
    done = pdeserve("datagen", "list")
    assert done.returncode == 0
    heads = [line for line in done.stdout.splitlines() if not line.startswith(" ")]
    families = [line.split(":")[0] for line in heads]
    assert {"burgers", "darcy", "navier-stokes", "helmholtz"} <= set(families)
    assert families == sorted(families)
    built_in = [
        line for line in heads if line.split(":")[0] in {"burgers", "darcy", "navier-stokes", "helmholtz"}
    ]
    assert all(line.endswith(f"[from pdeserve {version('pdeserve')}]") for line in built_in), built_in
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
    done = pdeserve(*args, cwd=tmp_path)
    assert done.returncode == code
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert lines[0].startswith("pdeserve")


def test_datagen_script_equals_pdeserve_datagen():
    """The installed ``datagen`` script has every ``pdeserve datagen`` subcommand (import, retrain too)."""
    script = Path(sys.executable).with_name("datagen")
    ours = subprocess.run([script, "--help"], capture_output=True, text=True)
    theirs = pdeserve("datagen", "--help")
    assert ours.returncode == theirs.returncode == 0
    # datagen's own commands, then one per installed family (plugins included), then retrain.
    ours_choices = re.findall(r"\{list,inspect,import,[^}]*\}", " ".join(ours.stdout.split()))[0]
    assert ours_choices in " ".join(theirs.stdout.split())
    families = ours_choices.strip("{}").split(",")[3:-1]
    assert families == sorted(families) and families[-1] != "retrain" and ours_choices.endswith(",retrain}")
    assert {"burgers", "darcy", "helmholtz", "navier-stokes"} <= set(families)
    refused = subprocess.run(
        [script, "darcy", "--n", "-1", "--resolution", "64", "--out", "x.h5"], capture_output=True, text=True
    )
    assert refused.returncode == 1
    assert refused.stderr.strip() == "datagen: error: --n must be at least 1, got -1"


def test_retrain_is_one_command_under_three_names():
    """``pdeserve retrain``, ``pdeserve datagen retrain`` and ``datagen retrain`` take the same options."""
    script = Path(sys.executable).with_name("datagen")
    helps = [
        pdeserve("retrain", "--help"),
        pdeserve("datagen", "retrain", "--help"),
        subprocess.run([script, "retrain", "--help"], capture_output=True, text=True),
    ]
    assert [done.returncode for done in helps] == [0, 0, 0]
    options = [_options_of(done.stdout) for done in helps]
    assert options[0] == options[1] == options[2]
    assert {"--repo", "--model", "--max-regression", "--viscosity", "--contrast"} <= set(options[0])


def _options_of(text: str) -> list[str]:
    """The options a ``--help`` lists (the usage line aside), in order."""
    body = text.split("\n\n", 1)[1]
    return [line.split()[0].rstrip(",") for line in body.splitlines() if line.startswith("  --")]


def test_help_imports_neither_torch_nor_ray():
    """Building every command's parser stays light: torch and Ray load inside the commands."""
    code = (
        "import sys\n"
        "from pdeserve.cli import build_parser\n"
        "build_parser()\n"
        "print(sorted({'torch', 'ray'} & {m.split('.')[0] for m in sys.modules}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_module_runs_the_installed_command():
    """``python -m pdeserve.cli`` (what ``torchrun -m pdeserve.cli`` runs) is the ``pdeserve`` script."""
    script = Path(sys.executable).with_name("pdeserve")
    installed = subprocess.run([script, "--help"], capture_output=True, text=True)
    module = pdeserve("--help")
    assert installed.returncode == module.returncode == 0
    assert module.stdout == installed.stdout
    assert "retrain" in module.stdout


def test_models_validate_republishes_the_same_weights_with_a_checked_card(tmp_path):
    import hashlib
    import shutil

    from pdeserve.operators.repository import ModelRepository

    root = Path(__file__).resolve().parents[1]
    shutil.copytree(root / "models" / "darcy-fno" / "1", tmp_path / "darcy-fno" / "1")
    args = ("models", "validate", "darcy-fno", "--repo", str(tmp_path), "--samples", "12")
    done = pdeserve(*args, "--sweep-samples", "1", "--ledger-samples", "6", "--seed", "3")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("published darcy-fno version 2: version 1's weights")
    version, card = ModelRepository(tmp_path).card("darcy-fno")
    weights = [(tmp_path / "darcy-fno" / v / "model.safetensors").read_bytes() for v in ("1", "2")]
    assert version == "2" and hashlib.sha256(weights[1]).hexdigest() == card.weights.sha256
    assert weights[0] == weights[1]
    assert (card.lineage.mode, card.lineage.parent) == ("validate", "1")
    assert card.calibration.n_samples == 12 and 0.2 < card.calibration.scale < 5.0
    assert card.ledger.n_samples == 6 and card.ledger.side == 64
    assert [s.side for s in card.validation.sides][::6] == [32, 96, 256]
    assert all(s.relative_l2 < 0.1 for s in card.validation.sides)
    assert (card.input_ranges[0].low, card.input_ranges[0].high) == (3.0, 12.0)


def test_a_model_whose_family_is_not_installed_is_one_line_naming_the_distribution(tmp_path):
    import json
    import shutil

    root = Path(__file__).resolve().parents[1]
    version = sorted((root / "models" / "darcy-fno").iterdir(), key=lambda p: int(p.name))[-1]
    shutil.copytree(version, tmp_path / "orphan" / "1")
    config = tmp_path / "orphan" / "1" / "config.json"
    card = json.loads(config.read_text())
    card["pde"] = "porous-media"
    card["family"] = {"distribution": "pdeserve-porous-media", "version": "2.1.0", "data_format": None}
    config.write_text(json.dumps(card))
    done = pdeserve("datagen", "retrain", "--model", "orphan", "--repo", str(tmp_path), "--quiet")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert "'pdeserve-porous-media' (version 2.1.0), which is not installed here" in lines[0]
