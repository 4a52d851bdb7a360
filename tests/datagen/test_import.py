"""``pdeserve datagen import``: each format read from a file its own tooling wrote, the dataset it becomes
(values, attributes, training pairs), and one-line errors for malformed files."""

from __future__ import annotations

import collections
import hashlib
import io
import json
import os
import pickle
import zipfile

import h5py
import numpy as np
import pytest
import scipy.io
import torch
import xarray as xr
from import_sources import (
    CFD_FIELDS,
    fno_navier_stokes,
    matlab_v73,
    pdebench_burgers,
    pdebench_cfd,
    pdebench_darcy,
)

from pdeserve.cli import main
from pdeserve.datagen.dataset import load_dataset
from pdeserve.datagen.importers import ImportOptions, _tensors, import_file
from pdeserve.operators.pairs import operator_pairs


def datagen_import(capsys, *args) -> tuple[int, str, str]:
    """``pdeserve datagen import ARGS --quiet`` (in this process): exit code, stdout, stderr."""
    capsys.readouterr()
    code = main(["datagen", "import", *map(str, args), "--quiet"])
    out, err = capsys.readouterr()
    return code, out, err


def imported(fmt, source, tmp_path, name="imported", options=None, chunk_size=5):
    out = import_file(
        fmt, source, tmp_path / f"{name}.h5", name, options, chunk_size=chunk_size, progress=False
    )
    data = load_dataset(out)
    attrs = data.attrs
    assert attrs["source_file"] == source.name and attrs["pde"] == name
    assert attrs["source_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert not (tmp_path / f"{name}.h5.partial").exists()
    return data, json.loads(attrs["source_variables"])


def assert_pairs(data, channels_in: int, channels_out: int) -> None:
    pairs = operator_pairs(data)
    assert pairs.x.shape[:2] == (data.n_samples, channels_in) and pairs.y.shape[:2] == (
        data.n_samples,
        channels_out,
    )
    assert pairs.time_map is None and data.family.sample is None and data.family.reference is None
    assert data.family.origin is None


def test_the_well_dummy_file_becomes_windows_with_components_and_constant_fields(tmp_path):
    from the_well.utils.dummy_data import write_dummy_data

    source = tmp_path / "dummy_well.hdf5"
    write_dummy_data(str(source))
    data, variables = imported("the-well", source, tmp_path, options=ImportOptions(input_steps=2))
    with h5py.File(source) as f:
        field, constant = f["t1_fields/field"][...], f["t0_fields/constant_field"][...]
    n_traj, steps = field.shape[:2]
    assert data.attrs["input_fields"] == [
        "constant_field",
        "field_x@t-1",
        "field_y@t-1",
        "field_x@t",
        "field_y@t",
    ]
    assert data.attrs["output_fields"] == ["field_x@t+1", "field_y@t+1"]
    assert data.n_samples == n_traj * (steps - 2)
    for sample in (0, steps - 3, steps - 2, data.n_samples - 1):  # both trajectories, first and last windows
        traj, t = divmod(sample, steps - 2)
        t += 1
        np.testing.assert_array_equal(data.inputs["constant_field"][sample], constant[traj])
        for c, axis in enumerate("xy"):
            np.testing.assert_array_equal(
                data.inputs[f"field_{axis}@t-1"][sample], field[traj, t - 1, ..., c]
            )
            np.testing.assert_array_equal(data.inputs[f"field_{axis}@t"][sample], field[traj, t, ..., c])
            np.testing.assert_array_equal(
                data.outputs[f"field_{axis}@t+1"][sample], field[traj, t + 1, ..., c]
            )
    assert data.inputs["field_x@t"].dtype == np.float32
    assert variables["field_y@t+1"]["variable"] == "t1_fields/field" and variables["field_y@t+1"][
        "component"
    ] == [1]
    assert (
        variables["field_y@t+1"]["shape"] == list(field.shape)
        and variables["field_y@t+1"]["dtype"] == "float32"
    )
    assert data.attrs["source_format"] == "the-well" and data.attrs["boundary"] == "periodic"
    assert data.family.boundary == "periodic" and data.family.dims == ("x", "y")
    assert data.parameters.as_dict() == {"a": 0.25, "b": 0.75}
    assert_pairs(data, 5, 2)


def test_pdebench_darcy_records_beta_and_drops_the_singleton_axis(tmp_path):
    source = tmp_path / "2D_DarcyFlow_beta1.0_Train.hdf5"
    written = pdebench_darcy(source, beta=1.0)
    data, variables = imported("auto", source, tmp_path)
    np.testing.assert_array_equal(data.inputs["nu"], written["nu"])
    np.testing.assert_array_equal(data.outputs["tensor"], written["tensor"][:, 0])
    assert variables["tensor"]["shape"] == [12, 1, 16, 16] and variables["nu"]["dtype"] == "float32"
    assert data.attrs["source_format"] == "pdebench" and data.attrs["boundary"] == "dirichlet"
    assert data.parameters.as_dict() == {"beta": 1.0}
    assert data.family.parameters_from({"beta": 1.0, "other": 2}) == data.parameters
    with h5py.File(tmp_path / "imported.h5") as f:
        np.testing.assert_array_equal(f["x"][...], written["x-coordinate"])
        assert f["nu"].chunks == (1, 16, 16) and f["nu"].compression == "gzip"
    with xr.open_dataset(tmp_path / "imported.h5", engine="h5netcdf") as ds:
        assert ds["nu"].dims == ("sample", "x", "y")
    assert_pairs(data, 1, 1)


def test_source_attributes_that_cannot_be_parameters_are_left_out(tmp_path):
    source = tmp_path / "darcy.hdf5"
    pdebench_darcy(source, beta=2.0)
    with h5py.File(source, "r+") as f:  # names no dataclass field may take
        f.attrs["lambda"], f.attrs["__class__"], f.attrs["not a name"] = 1.0, 2.0, 3.0
    data, _ = imported("pdebench", source, tmp_path)
    assert data.parameters.as_dict() == {"beta": 2.0}


def test_a_folder_is_refused_in_one_line(tmp_path, capsys):
    store = tmp_path / "run.zarr"
    store.mkdir()
    code = main(
        ["datagen", "import", "xarray", str(store), "--inputs", "a", "--outputs", "u", "--out", "x.h5"]
    )
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and "run.zarr is a folder" in lines[0]
    assert str(tmp_path) not in lines[0]


def test_pdebench_burgers_and_cfd_become_windows_of_their_states(tmp_path):
    source = tmp_path / "1D_Burgers_Sols_Nu0.001.hdf5"
    tensor = pdebench_burgers(source)["tensor"]
    data, variables = imported("pdebench", source, tmp_path, options=ImportOptions(input_steps=2))
    assert data.attrs["input_fields"] == ["tensor@t-1", "tensor@t"]
    windows = tensor.shape[1] - 2
    for sample in range(data.n_samples):
        traj, t = divmod(sample, windows)
        np.testing.assert_array_equal(data.inputs["tensor@t-1"][sample], tensor[traj, t])
        np.testing.assert_array_equal(data.outputs["tensor@t+1"][sample], tensor[traj, t + 2])
    assert data.attrs["boundary"] == "periodic" and data.parameters.as_dict() == {"Nu": 0.001}
    assert len(variables["_notes"]["times"]) == tensor.shape[1] + 1
    assert_pairs(data, 2, 1)

    source = tmp_path / "2D_CFD_Rand_M0.1_Eta0.01_Zeta0.01_periodic_8_Train.hdf5"
    fields = pdebench_cfd(source)
    data, _ = imported("auto", source, tmp_path, name="cfd", chunk_size=2)
    assert data.attrs["output_fields"] == [f"{k}@t+1" for k in CFD_FIELDS]
    for k in CFD_FIELDS:
        np.testing.assert_array_equal(data.inputs[f"{k}@t"], fields[k][:, :-1].reshape(-1, 8, 8))
        np.testing.assert_array_equal(data.outputs[f"{k}@t+1"], fields[k][:, 1:].reshape(-1, 8, 8))
    assert data.parameters.as_dict() == {"eta": 0.01, "zeta": 0.01, "M": 0.1}
    assert_pairs(data, 4, 4)


def test_fno_mat_files_v5_and_v73_with_matlab_axis_order(tmp_path):
    darcy = {"coeff": rng_field((5, 9, 9)), "sol": rng_field((5, 9, 9)), "Kcoeff": rng_field((5, 9, 9))}
    scipy.io.savemat(tmp_path / "piececonst_r9_N5.mat", darcy)
    data, variables = imported("auto", tmp_path / "piececonst_r9_N5.mat", tmp_path, name="fno-darcy")
    np.testing.assert_array_equal(data.inputs["coeff"], darcy["coeff"])
    np.testing.assert_array_equal(data.outputs["sol"], darcy["sol"])
    assert data.inputs["coeff"].dtype == np.float64 and data.attrs["source_matlab_version"] == "5"
    assert_pairs(data, 1, 1)

    burgers = {"a": rng_field((4, 16)), "u": rng_field((4, 16))}
    matlab_v73(tmp_path / "burgers_data_R10.mat", burgers)
    data, variables = imported("fno-mat", tmp_path / "burgers_data_R10.mat", tmp_path, name="fno-burgers")
    np.testing.assert_array_equal(data.inputs["a"], burgers["a"])  # (N, X) in MATLAB order, (X, N) in HDF5
    np.testing.assert_array_equal(data.outputs["u"], burgers["u"])
    assert variables["a"]["shape"] == [4, 16] and variables["a"]["stored_shape"] == [16, 4]
    assert data.attrs["source_matlab_version"] == "7.3" and data.attrs["boundary"] == "periodic"

    ns = fno_navier_stokes()
    matlab_v73(tmp_path / "ns_V1e-3_N2_T5.mat", ns)
    data, _ = imported("auto", tmp_path / "ns_V1e-3_N2_T5.mat", tmp_path, name="fno-ns", chunk_size=3)
    states = np.concatenate([ns["a"][:, None], np.moveaxis(ns["u"], -1, 1)], axis=1)  # a, then u's times
    np.testing.assert_array_equal(data.inputs["u@t"], states[:, :-1].reshape(-1, 8, 8))
    np.testing.assert_array_equal(data.outputs["u@t+1"], states[:, 1:].reshape(-1, 8, 8))
    assert_pairs(data, 1, 1)


def rng_field(shape):
    return np.random.default_rng(sum(shape)).standard_normal(shape)


def test_neuraloperator_pt_is_memory_mapped_and_channels_split(tmp_path):
    x = torch.randn(6, 2, 8, 8)
    y = torch.randn(6, 8, 8, dtype=torch.float64)
    torch.save({"x": x, "y": y}, tmp_path / "darcy_train_8.pt")
    data, variables = imported("auto", tmp_path / "darcy_train_8.pt", tmp_path, name="no-darcy")
    assert data.attrs["input_fields"] == ["a_0", "a_1"] and data.attrs["output_fields"] == ["u"]
    np.testing.assert_array_equal(data.inputs["a_1"], x[:, 1].numpy())
    np.testing.assert_array_equal(data.outputs["u"], y.numpy())
    assert variables["a_1"]["variable"] == "x" and variables["a_1"]["index"] == {"axis": 1, "index": 1}
    assert_pairs(data, 2, 1)


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_pt_file_with_an_arbitrary_object_is_refused_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where the payload would leave its mark
    torch.save({"x": torch.zeros(2, 4), "y": torch.zeros(2, 4), "hook": _Payload()}, tmp_path / "evil.pt")
    code, _, err = datagen_import(capsys, "auto", "evil.pt", "--out", "o.h5")
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "evil.pt holds objects other than tensors (posix.system)" in err
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "o.h5").exists()


def test_pt_views_sharing_a_storage_in_an_ordered_dict_read_back_bit_equal(tmp_path):
    base = torch.randn(5, 3, dtype=torch.float64)
    saved = collections.OrderedDict(
        turned=torch.randn(4, 6, 8).transpose(1, 2),  # saved as-is: not contiguous
        tail=base[2:],  # shares base's storage, from an offset
        base=base,
        column=base[:, 1],
        scalar=torch.tensor(2.5),
        flags=torch.tensor([True, False]),
        step=3,
        note="plain values are ignored",
    )
    torch.save(saved, tmp_path / "views.pt")
    arrays = _tensors(tmp_path / "views.pt")
    assert list(arrays) == ["turned", "tail", "base", "column", "scalar", "flags"]
    for key, array in arrays.items():
        expected = saved[key].numpy()
        assert (array.dtype, array.shape) == (expected.dtype, expected.shape), key
        assert array.tobytes() == expected.tobytes() and not array.flags.writeable, key
    assert not arrays["turned"].flags.c_contiguous and np.shares_memory(arrays["tail"], arrays["base"])


class _StorageRef:
    """Stands for storage "0" (16 floats) of a torch.save zip in a hand-made data.pkl."""


class _View:
    """Pickles as torch.save pickles a tensor, with any offset, size and stride into storage "0"."""

    def __init__(self, offset, size, stride):
        self.args = (offset, size, stride)

    def __reduce__(self):
        return torch._utils._rebuild_tensor_v2, (_StorageRef(), *self.args, False, collections.OrderedDict())


class _TorchPickler(pickle.Pickler):
    def persistent_id(self, obj):
        return ("storage", torch.FloatStorage, "0", "cpu", 16) if isinstance(obj, _StorageRef) else None


def _repack(path, data_pkl=None, storages=zipfile.ZIP_STORED):
    """Write the torch.save zip at ``path`` again, with another data.pkl or its storages compressed."""
    with zipfile.ZipFile(path) as archive:
        members = [(info.filename, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members:
            if name.endswith("/data.pkl") and data_pkl is not None:
                data = data_pkl
            archive.writestr(name, data, storages if "/data/" in name else zipfile.ZIP_STORED)


def _crafted(path, view):
    torch.save({"x": torch.arange(16.0)}, path)
    out = io.BytesIO()
    _TorchPickler(out, protocol=2).dump({"x": view})
    _repack(path, data_pkl=out.getvalue())


def test_a_pt_tensor_reaching_past_its_storage_is_refused_in_one_line(tmp_path):
    _crafted(
        tmp_path / "fits.pt", _View(10, (3,), (2,))
    )  # the last element read is the storage's last but one
    np.testing.assert_array_equal(_tensors(tmp_path / "fits.pt")["x"], [10.0, 12.0, 14.0])
    for offset, size, stride in [(10, (4,), (2,)), (0, (2, 2), (100, 1)), (17, (0,), (1,))]:
        _crafted(tmp_path / "corrupt.pt", _View(offset, size, stride))
        with pytest.raises(ValueError) as caught:
            _tensors(tmp_path / "corrupt.pt")
        message = str(caught.value)
        assert (
            "variable 'x'" in message and "past its storage of 16 elements" in message and "\n" not in message
        )


def test_pt_files_asking_for_unbounded_work_are_refused_at_once(tmp_path):
    """A dict key of nested tuples shared through the memo (hashing it would take 2^60 steps), a view of
    2^70 elements (stride 0 repeats one element), and a stride no address space holds."""
    deep = bytearray(b"\x80\x02}N")  # PROTO 2, EMPTY_DICT, NONE
    for level in range(60):
        deep += b"q" + bytes([level]) + b"h" + bytes([level]) + b"\x86"  # BINPUT, BINGET, TUPLE2
    torch.save({"x": torch.zeros(2)}, tmp_path / "deep.pt")
    _repack(tmp_path / "deep.pt", data_pkl=bytes(deep + b"K\x01s."))  # the tuple as a key, 1, SETITEM, STOP
    with pytest.raises(ValueError, match=r"its data\.pkl is malformed"):
        _tensors(tmp_path / "deep.pt")  # refused before any key is hashed
    for view, message in [
        (_View(0, (2**70,), (0,)), "elements; too many"),
        (_View(0, (1, 2), (2**70, 1)), "has a stride out of range"),
    ]:
        _crafted(tmp_path / "huge.pt", view)
        with pytest.raises(ValueError, match=message):
            _tensors(tmp_path / "huge.pt")


def test_a_pt_file_with_a_compressed_storage_is_refused_in_one_line(tmp_path):
    torch.save({"x": torch.zeros(2, 4), "y": torch.zeros(2, 4)}, tmp_path / "deflated.pt")
    _repack(tmp_path / "deflated.pt", storages=zipfile.ZIP_DEFLATED)
    with pytest.raises(ValueError) as caught:
        _tensors(tmp_path / "deflated.pt")
    message = str(caught.value)
    assert message.startswith("deflated.pt: storage") and "is compressed" in message and "\n" not in message


def test_xarray_file_with_named_dims_in_any_order(tmp_path):
    g = np.random.default_rng(5)
    ds = xr.Dataset(
        {
            "k": (("run", "lon", "lat"), g.standard_normal((7, 6, 5)).astype(np.float32)),
            "p": (("lat", "run", "lon"), g.standard_normal((5, 7, 6))),
        },
        coords={"lon": np.linspace(0, 350, 6), "lat": np.linspace(-60, 60, 5)},
        attrs={"reynolds": 100.0, "history": "made by a test"},
    )
    ds.to_netcdf(tmp_path / "sim.nc", engine="h5netcdf")
    options = ImportOptions(inputs=["k"], outputs=["p=pressure"], sample_dim="run")
    data, variables = imported("xarray", tmp_path / "sim.nc", tmp_path, name="sim", options=options)
    np.testing.assert_array_equal(data.inputs["k"], ds["k"].values)
    np.testing.assert_array_equal(data.outputs["pressure"], ds["p"].transpose("run", "lon", "lat").values)
    assert data.family.dims == ("lon", "lat") and variables["pressure"]["variable"] == "p"
    assert data.parameters.as_dict() == {"reynolds": 100.0}
    with h5py.File(tmp_path / "sim.h5") as f:
        np.testing.assert_array_equal(f["lat"][...], ds["lat"].values)
    assert_pairs(data, 1, 1)


def test_malformed_files_get_one_line_naming_what_is_wrong(tmp_path, capsys):
    with h5py.File(tmp_path / "nodata.hdf5", "w") as f:
        f.create_dataset("x-coordinate", data=np.arange(4.0))
    code, _, err = datagen_import(capsys, "pdebench", tmp_path / "nodata.hdf5", "--out", tmp_path / "o.h5")
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "no variable 'tensor' or 'density'" in err

    scipy.io.savemat(tmp_path / "coeff_only.mat", {"coeff": np.ones((2, 3, 3))})
    code, _, err = datagen_import(capsys, "fno-mat", tmp_path / "coeff_only.mat", "--out", tmp_path / "o.h5")
    assert code == 1 and err.strip() == "pdeserve: error: coeff_only.mat: no variable 'sol' (FNO Darcy)"

    xr.Dataset({"k": (("sample", "x"), np.ones((2, 3)))}).to_netcdf(tmp_path / "a.nc", engine="h5netcdf")
    code, _, err = datagen_import(
        capsys, "xarray", tmp_path / "a.nc", "--inputs", "k", "--outputs", "q", "--out", tmp_path / "o.h5"
    )
    assert code == 1 and err.strip() == "pdeserve: error: a.nc: no variable 'q' (variables: k)"
    assert not (tmp_path / "o.h5").exists()

    with pytest.raises(ValueError, match="--name '9lives' is not a simple identifier"):
        import_file("auto", tmp_path / "a.nc", tmp_path / "o.h5", "9lives")
    with pytest.raises(ValueError, match="--name 'darcy' is a registered PDE family's name"):
        import_file("auto", tmp_path / "a.nc", tmp_path / "o.h5", "darcy")


@pytest.mark.parametrize(
    ("fmt", "write", "options", "message"),
    [
        (
            "the-well",
            lambda p: _well_with(p, "t1_fields/field", np.zeros((2, 10, 32, 31, 2), np.float32)),
            None,
            "variable 't1_fields/field' has shape (2, 10, 32, 31, 2); expected (2, n_steps, 32, 32, 2)",
        ),
        (
            "the-well",
            lambda p: h5py.File(p, "w").close(),
            None,
            "no variable 't0_fields' (The Well's layout)",
        ),
        (
            "pdebench",
            lambda p: _h5(p, nu=np.ones((3, 4, 4)), tensor=np.ones((3, 2, 4, 4))),
            None,
            "variable 'tensor' has shape (3, 2, 4, 4); expected (N, 1, X, Y) beside 'nu'",
        ),
        (
            "pdebench",
            lambda p: _h5(p, tensor=np.ones((3, 4, 8), np.complex64)),
            None,
            "variable 'tensor' has dtype complex64; only real numbers can be imported",
        ),
        (
            "pdebench",
            lambda p: _h5(p, tensor=np.ones((3, 1, 8))),
            None,
            "1 input steps need at least 2 states",
        ),
        (
            "pdebench",
            lambda p: _h5(p, tensor=np.ones((2, 3, 2, 2, 2, 2))),
            None,
            "a grid of shape (2, 2, 2, 2) and dimensions ('x', 'y', 'z'): 1 to 3 named axes expected",
        ),
        (
            "pdebench",
            pdebench_darcy,
            ImportOptions(input_steps=2),
            "--input-steps applies to time series; bad.src holds input/output pairs",
        ),
        (
            "fno-mat",
            lambda p: matlab_v73(p, {"a": np.ones((2, 4, 4)), "u": np.ones((2, 5, 4, 3))}),
            None,
            "variable 'u' has shape (2, 5, 4, 3); expected (2, 4, 4) (Burgers) or (2, 4, 4, 'T')",
        ),
        ("neuraloperator-pt", lambda p: torch.save({"x": torch.ones(2, 3)}, p), None, "no variable 'y'"),
        (
            "xarray",
            lambda p: xr.Dataset({"k": (("n", "x"), np.ones((2, 3)))}).to_netcdf(p, engine="h5netcdf"),
            ImportOptions(inputs=["k"], outputs=["k=k2"]),
            "variable 'k' has dimensions ('n', 'x'), not the sample dimension 'sample'",
        ),
    ],
)
def test_malformed_file_of_each_format_is_one_clear_error(tmp_path, fmt, write, options, message):
    source = tmp_path / "bad.src"
    write(source)
    with pytest.raises(ValueError) as caught:
        import_file(fmt, source, tmp_path / "o.h5", "bad", options, progress=False)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert not (tmp_path / "o.h5").exists()


def _h5(path, **variables):
    with h5py.File(path, "w") as f:
        for key, values in variables.items():
            f.create_dataset(key, data=values)


def _well_with(path, variable, values):
    from the_well.utils.dummy_data import write_dummy_data

    write_dummy_data(str(path))
    with h5py.File(path, "a") as f:
        attrs = dict(f[variable].attrs)
        del f[variable]
        f.create_dataset(variable, data=values).attrs.update(attrs)


def test_non_finite_values_are_refused_at_the_first_bad_sample_and_leave_no_file(tmp_path, capsys):
    source = tmp_path / "darcy.hdf5"
    pdebench_darcy(source)
    with h5py.File(source, "a") as f:
        f["nu"][7, 2, 3] = np.nan
        f["tensor"][9, 0, 0, 0] = np.inf
    code, _, err = datagen_import(capsys, "pdebench", source, "--out", tmp_path / "o.h5", "--chunk-size", "4")
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "field 'nu' holds NaN or Inf values at sample 7 (source sample 7)" in err
    assert not (tmp_path / "o.h5").exists() and not (tmp_path / "o.h5.partial").exists()


def test_datagen_import_command_prints_what_it_wrote_under_a_default_name(tmp_path, capsys):
    source = tmp_path / "darcy.hdf5"  # a registered family's name: the default is prefixed
    pdebench_darcy(source, beta=0.1)
    code, out, err = datagen_import(capsys, "auto", source, "--out", tmp_path / "d.h5")
    assert code == 0, err
    assert out.startswith("wrote 12 imported-darcy samples from darcy.hdf5")
    assert load_dataset(tmp_path / "d.h5").family.name == "imported-darcy"
