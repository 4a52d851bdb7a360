"""Source files for the import tests, each written the way its format's own tooling writes it: The Well's
``write_dummy_data``, PDEBench's layouts (its ``Data_Merge.py``: ``nu``/``tensor`` ``(N, 1, X, Y)``,
``tensor`` ``(N, T, X)``, ``density``/``pressure``/``Vx``/``Vy``, ``*-coordinate``, root attributes),
``scipy.io.savemat``, a MATLAB v7.3 HDF5 file (512-byte header, axes reversed, ``MATLAB_class``),
``torch.save`` and xarray's ``to_netcdf``."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def pdebench_darcy(path: Path, n: int = 12, side: int = 16, beta: float = 1.0) -> dict[str, np.ndarray]:
    g = rng(1)
    data = {
        "nu": np.where(g.standard_normal((n, side, side)) > 0, 12.0, 3.0).astype(np.float32),
        "tensor": g.standard_normal((n, 1, side, side)).astype(np.float32),
        "x-coordinate": np.linspace(0.5 / side, 1 - 0.5 / side, side, dtype=np.float32),
        "y-coordinate": np.linspace(0.5 / side, 1 - 0.5 / side, side, dtype=np.float32),
    }
    with h5py.File(path, "w") as f:
        for key, values in data.items():
            f.create_dataset(key, data=values)
        f.attrs["beta"] = beta
    return data


def pdebench_burgers(path: Path, n: int = 3, steps: int = 6, side: int = 32) -> dict[str, np.ndarray]:
    data = {
        "tensor": rng(2).standard_normal((n, steps, side)).astype(np.float32),
        "x-coordinate": np.linspace(0, 1, side, endpoint=False),
        "t-coordinate": np.linspace(0, 2, steps + 1),  # PDEBench's holds one time more than the states
    }
    with h5py.File(path, "w") as f:
        for key, values in data.items():
            f.create_dataset(key, data=values)
        f.attrs["Nu"] = 0.001
    return data


CFD_FIELDS = ("density", "pressure", "Vx", "Vy")


def pdebench_cfd(path: Path, n: int = 2, steps: int = 4, side: int = 8) -> dict[str, np.ndarray]:
    g = rng(3)
    data = {k: g.standard_normal((n, steps, side, side)).astype(np.float32) for k in CFD_FIELDS}
    with h5py.File(path, "w") as f:
        for key, values in data.items():
            f.create_dataset(key, data=values)
        for axis in ("x", "y"):
            f.create_dataset(f"{axis}-coordinate", data=np.linspace(0, 1, side, endpoint=False))
        f.create_dataset("t-coordinate", data=np.linspace(0, 1, steps + 1))
        f.attrs.update({"eta": 0.01, "zeta": 0.01, "M": 0.1})
    return data


def matlab_v73(path: Path, variables: dict[str, np.ndarray]) -> None:
    """A MATLAB v7.3 MAT-file as MATLAB writes it: HDF5 after a 512-byte header, each variable stored
    column-major (so HDF5 holds its axes reversed), with a ``MATLAB_class`` attribute."""
    with h5py.File(path, "w", userblock_size=512) as f:
        for key, values in variables.items():
            f.create_dataset(key, data=np.ascontiguousarray(values.T))
            f[key].attrs["MATLAB_class"] = np.bytes_("double")
    text = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    header = text.ljust(116, b" ") + b"\0" * 8 + b"\x00\x02" + b"IM"
    with open(path, "r+b") as handle:
        handle.write(header)


def fno_navier_stokes(n: int = 2, side: int = 8, steps: int = 5) -> dict[str, np.ndarray]:
    g = rng(4)
    return {
        "a": g.standard_normal((n, side, side)),
        "u": g.standard_normal((n, side, side, steps)),
        "t": np.arange(1.0, steps + 1)[None, :],
    }
