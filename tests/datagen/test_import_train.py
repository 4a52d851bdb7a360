"""An imported dataset trains like a generated one: ``datagen import`` then ``pdeserve train``."""

from __future__ import annotations

import json

import pytest
from import_sources import pdebench_darcy

from pdeserve.cli import main


def _well(path):
    from the_well.utils.dummy_data import write_dummy_data

    write_dummy_data(str(path))


@pytest.mark.parametrize(
    ("fmt", "write", "name", "channels"),
    [
        ("pdebench", pdebench_darcy, "pdebench-darcy", (["nu"], ["tensor"])),
        (
            "the-well",
            _well,
            "well-dummy",
            (["constant_field", "field_x@t", "field_y@t"], ["field_x@t+1", "field_y@t+1"]),
        ),
    ],
)
def test_pdeserve_train_on_an_imported_file(tmp_path, capsys, fmt, write, name, channels):
    source = tmp_path / "source.hdf5"
    write(source)
    data = tmp_path / f"{name}.h5"
    assert main(["datagen", "import", fmt, str(source), "--out", str(data), "--name", name, "--quiet"]) == 0
    repo = tmp_path / "repo"
    args = ["--epochs", "1", "--batch-size", "4", "--arg", "hidden_channels=4", "--arg", "n_modes=[4,4]"]
    code = main(
        ["train", "--data", str(data), "--model", "fno", "--repo", str(repo), "--name", "m", "--quiet", *args]
    )
    assert code == 0, capsys.readouterr().err
    card = json.loads((repo / "m" / "1" / "config.json").read_text())
    assert card["pde"] == name
    assert card["family"] == {"distribution": None, "version": None, "data_format": fmt}
    assert [f["name"] for f in card["inputs"]] == channels[0]
    assert [f["name"] for f in card["outputs"]] == channels[1]
    assert card["validation"] is None and card["calibration"] is None  # no solver: nothing to sweep
