import signal
import subprocess
import sys
import time

import h5netcdf
import numpy as np
import pytest
import xarray as xr

from pdeserve.datagen import dataset as dataset_module
from pdeserve.datagen.darcy import DarcyParameters
from pdeserve.datagen.dataset import GenerationRequest, load_dataset, write_dataset
from pdeserve.datagen.families import get_family


def datagen(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pdeserve.cli", "datagen", *args], capture_output=True, text=True
    )


def test_cli_file_opens_in_xarray_with_named_dims_coordinates_and_attributes(tmp_path):
    out = tmp_path / "darcy.h5"
    result = datagen("darcy", "--n", "6", "--resolution", "17", "--out", str(out), "--seed", "3", "--quiet")
    assert result.returncode == 0, result.stderr
    with xr.open_dataset(out, engine="h5netcdf") as ds:
        assert dict(ds.sizes) == {"sample": 6, "x": 17, "y": 17}
        assert ds["a"].dims == ("sample", "x", "y") and ds["u"].dims == ("sample", "x", "y")
        np.testing.assert_allclose(ds["x"].values, np.linspace(0, 1, 17))
        assert not any(d.startswith("phony_dim") for d in ds.dims)
        attrs = ds.attrs
        assert attrs["pde"] == "darcy" and attrs["seed"] == 3 and attrs["schema_version"] == 1
        assert list(np.atleast_1d(attrs["input_fields"])) == ["a"]
        assert list(np.atleast_1d(attrs["output_fields"])) == ["u"]
        for key in (
            "alpha",
            "tau",
            "coefficient",
            "contrast",
            "forcing",
            "solve_resolution",
            "boundary_conditions",
            "scheme",
            "solver",
            "pdeserve_version",
        ):
            assert key in attrs, key
        assert (attrs["coefficient"], attrs["contrast"], attrs["tau"]) == ("piecewise", "12/3", 3.0)
    with h5netcdf.File(out, "r") as f:
        assert f.variables["a"].chunks == (1, 17, 17)
        assert f.variables["a"].compression == "gzip"


def test_same_seed_gives_identical_arrays_and_another_seed_does_not(tmp_path):
    def make(name: str, seed: int, workers: int = 1):
        request = GenerationRequest(get_family("darcy"), DarcyParameters(), 5, 17, seed)
        return load_dataset(write_dataset(request, tmp_path / name, workers=workers, progress=False))

    first, again, parallel, other = (
        make("a.h5", 1),
        make("b.h5", 1),
        make("c.h5", 1, workers=2),
        make("d.h5", 2),
    )
    np.testing.assert_array_equal(first.inputs["a"], again.inputs["a"])
    np.testing.assert_array_equal(first.outputs["u"], again.outputs["u"])
    np.testing.assert_array_equal(first.outputs["u"], parallel.outputs["u"])
    assert not np.array_equal(first.inputs["a"], other.inputs["a"])
    assert first.fingerprint() == again.fingerprint() != other.fingerprint()


def test_interrupted_run_resumes_after_the_last_chunk_and_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    request = GenerationRequest(get_family("darcy"), DarcyParameters(), 10, 17, 5)
    reference = load_dataset(write_dataset(request, tmp_path / "ref.h5", chunk_size=4, progress=False))

    calls = []
    original = dataset_module._sample_chunk

    def dying(req, indices):
        calls.append(list(indices))
        if len(calls) == 2:
            raise KeyboardInterrupt  # the run dies while solving its second chunk
        return original(req, indices)

    monkeypatch.setattr(dataset_module, "_sample_chunk", dying)
    out = tmp_path / "out.h5"
    with pytest.raises(KeyboardInterrupt):
        write_dataset(request, out, chunk_size=4, progress=False)
    assert not out.exists() and (tmp_path / "out.h5.partial").exists()

    monkeypatch.setattr(
        dataset_module, "_sample_chunk", lambda req, idx: calls.append(list(idx)) or original(req, idx)
    )
    write_dataset(request, out, chunk_size=4, progress=False)
    assert calls[2][0] == 4, "the second run must start after the finished chunk"
    resumed = load_dataset(out)
    np.testing.assert_array_equal(resumed.inputs["a"], reference.inputs["a"])
    np.testing.assert_array_equal(resumed.outputs["u"], reference.outputs["u"])
    assert not (tmp_path / "out.h5.partial").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--n", "0"], "--n must be at least 1"),
        (["--resolution", "2"], "at least 3 nodes"),
        (["--solve-resolution", "100"], "does not nest"),
        (["--tau", "-1"], "tau must be positive"),
        (["--contrast", "12/0"], "contrast must be HIGH/LOW"),
        (["--coefficient", "binary"], "invalid choice"),
    ],
)
def test_bad_parameters_fail_before_any_work_with_one_line(tmp_path, args, message):
    out = tmp_path / "x.h5"
    base = {"--n": "4", "--resolution": "17"}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    result = datagen("darcy", "--out", str(out), *[t for kv in base.items() for t in kv], "--quiet")
    # 2 is argparse's usage-error code (a value outside the choices), 1 a refused parameter.
    assert result.returncode == (2 if message == "invalid choice" else 1)
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr
    assert not out.exists() and not (tmp_path / "x.h5.partial").exists()


def test_existing_output_is_refused_without_overwrite(tmp_path):
    out = tmp_path / "x.h5"
    out.write_text("precious")
    result = datagen("darcy", "--n", "2", "--resolution", "9", "--out", str(out), "--quiet")
    assert result.returncode == 1 and "--overwrite" in result.stderr
    assert out.read_text() == "precious"
    assert (
        datagen(
            "darcy", "--n", "2", "--resolution", "9", "--out", str(out), "--overwrite", "--quiet"
        ).returncode
        == 0
    )
    assert load_dataset(out).n_samples == 2


def test_loading_a_file_that_is_not_a_dataset_is_a_clear_error(tmp_path):
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match="not a readable HDF5 file"):
        load_dataset(junk)
    result = datagen("inspect", str(junk))
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1


def test_inspect_prints_ranges_and_plots_a_preview(tmp_path):
    from PIL import Image

    out, png = tmp_path / "d.h5", tmp_path / "preview.png"
    assert datagen("darcy", "--n", "3", "--resolution", "17", "--out", str(out), "--quiet").returncode == 0
    result = datagen("inspect", str(out), "--plot", str(png), "--samples", "2")
    assert result.returncode == 0, result.stderr
    a = load_dataset(out).inputs["a"]
    assert (
        f"a (input): shape (3, 17, 17), dtype float32, min {a.min():.4g}, max {a.max():.4g}" in result.stdout
    )
    assert "preview of 2 samples written" in result.stdout
    with Image.open(png) as image:
        # Two rows (samples) of two panels (a, u) at 100 dpi: 6.4 x 5.6 inches.
        assert image.format == "PNG" and image.size == (640, 560)


def _partial_samples(path) -> int:
    try:
        with h5netcdf.File(path, "r") as f:
            return int(f.attrs["samples_written"])
    except (OSError, KeyError):
        return 0  # not created yet, or caught mid-write


def test_sigkilled_run_resumes_and_produces_the_uninterrupted_file(tmp_path):
    args = ["darcy", "--n", "8", "--resolution", "33", "--solve-resolution", "257", "--seed", "9"]
    args += ["--chunk-size", "2", "--quiet"]
    reference = tmp_path / "ref.h5"
    assert datagen(*args, "--out", str(reference)).returncode == 0

    out, partial = tmp_path / "out.h5", tmp_path / "out.h5.partial"
    command = [sys.executable, "-m", "pdeserve.cli", "datagen", *args, "--out", str(out)]
    process = subprocess.Popen(command)
    deadline = time.monotonic() + 120
    while _partial_samples(partial) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not out.exists(), "the run was killed before it could finish"
    finished = _partial_samples(partial)  # 0 only if the kill corrupted the file mid-write

    resumed = datagen(*args, "--out", str(out))
    assert resumed.returncode == 0, resumed.stderr
    if finished:
        assert f"at sample {finished} of 8" in resumed.stderr
    first, second = load_dataset(reference), load_dataset(out)
    np.testing.assert_array_equal(first.inputs["a"], second.inputs["a"])
    np.testing.assert_array_equal(first.outputs["u"], second.outputs["u"])
    assert not partial.exists()


def test_ray_fan_out_gives_the_same_file_as_one_process(tmp_path):
    request = GenerationRequest(get_family("darcy"), DarcyParameters(), 6, 17, 4)
    alone = load_dataset(write_dataset(request, tmp_path / "one.h5", progress=False))
    fanned = load_dataset(
        write_dataset(
            request, tmp_path / "ray.h5", workers=2, ray_address="local", chunk_size=3, progress=False
        )
    )
    np.testing.assert_array_equal(alone.outputs["u"], fanned.outputs["u"])


def test_burgers_trajectories_get_a_time_dimension(tmp_path):
    out = tmp_path / "burgers.h5"
    args = [
        "burgers",
        "--n",
        "3",
        "--resolution",
        "64",
        "--solve-resolution",
        "256",
        "--record-every",
        "0.25",
    ]
    done = datagen(*args, "--out", str(out), "--quiet")
    assert done.returncode == 0, done.stderr
    with xr.open_dataset(out, engine="h5netcdf") as ds:
        assert ds["u0"].dims == ("sample", "x") and ds["u"].dims == ("sample", "t", "x")
        np.testing.assert_allclose(ds["t"].values, [0.25, 0.5, 0.75, 1.0])
        np.testing.assert_allclose(ds["x"].values, np.arange(64) / 64)
        assert ds.attrs["viscosity"] == 0.1 and ds.attrs["solve_resolution"] == 256
        # The mean is conserved and the energy decays.
        np.testing.assert_allclose(ds["u"].mean("x").values, 0, atol=1e-6)
        energy = (ds["u"] ** 2).mean("x").values
        assert np.all(np.diff(energy, axis=1) < 0)


def test_navier_stokes_cli_file_opens_in_xarray_with_time_and_space_dims(tmp_path):
    out = tmp_path / "ns.h5"
    args = ["navier-stokes", "--n", "2", "--resolution", "16", "--final-time", "0.2", "--record-every", "0.1"]
    done = datagen(*args, "--time-step", "1e-2", "--out", str(out), "--quiet")
    assert done.returncode == 0, done.stderr
    with xr.open_dataset(out, engine="h5netcdf") as ds:
        assert ds["w0"].dims == ("sample", "x", "y") and ds["w"].dims == ("sample", "t", "x", "y")
        assert ds["w"].shape == (2, 2, 16, 16)
        np.testing.assert_allclose(ds["t"].values, [0.1, 0.2])
        np.testing.assert_allclose(ds["y"].values, np.arange(16) / 16)
        assert not any(d.startswith("phony_dim") for d in ds.dims)
        assert ds.attrs["viscosity"] == 1e-3 and ds.attrs["pde"] == "navier-stokes"
        # The mean vorticity of the torus is conserved (zero) by the scheme.
        np.testing.assert_allclose(ds["w"].mean(("x", "y")).values, 0, atol=1e-6)


def test_each_family_states_its_boundary_kind_as_its_recorded_conditions_begin():
    from pdeserve.datagen.families import families

    kinds = {name: f.boundary for name, f in families().items() if f.origin.distribution == "pdeserve"}
    assert kinds == {
        "burgers": "periodic",
        "darcy": "dirichlet",
        "navier-stokes": "periodic",
        "helmholtz": "neumann",
    }
    for family in families().values():
        assert family.boundary_conditions.split(":")[0] == family.boundary
