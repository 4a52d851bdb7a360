"""``pdeserve datagen import``: readers of the file formats the field uses, one function per format.

Each reader opens its file lazily (h5py, xarray, a memory-mapped zip; only MATLAB v5 files are read
whole, as ``scipy.io.loadmat`` does) and describes it as an :class:`~pdeserve.datagen.importing.Source`
that :func:`~pdeserve.datagen.importing.write_import` streams into a pdeserve dataset:

``the-well``
    The Well's HDF5: ``t0_fields``/``t1_fields``/``t2_fields`` (``(n_traj, n_steps, *space[, d[, d]])``),
    ``dimensions``, ``boundary_conditions``, ``scalars``. Time series become windows; a vector or tensor
    field's components become channels named by the spatial dimensions (``velocity_x``); a field
    constant in time is an input of every window. Periodic if the file says so for every axis.
``pdebench``
    PDEBench's HDF5: Darcy (``nu`` -> ``tensor`` ``(N, 1, X, Y)``), one-field time series (``tensor``
    ``(N, T, *space)``: Burgers, advection, reaction-diffusion) and compressible flow (``density``,
    ``pressure``, ``Vx``, ``Vy``, ``Vz`` ``(N, T, *space)``) as windows; ``*-coordinate`` variables and the
    root attributes (``beta``, ``Nu``, ``eta``, ...) recorded.
``fno-mat``
    The FNO authors' ``.mat``: ``coeff`` -> ``sol`` (Darcy), ``a`` -> ``u`` (Burgers), ``a``/``u``/``t``
    (Navier-Stokes, ``u`` ``(N, X, Y, T)``: windows over the states ``a, u[..., 0], u[..., 1], ...``).
    MATLAB v5 through ``scipy.io.loadmat``; v7.3 (HDF5) through h5py, whose axes are MATLAB's reversed.
``neuraloperator-pt``
    neuraloperator's ``.pt`` dicts of tensors (``x`` -> ``y``), as ``torch.save`` writes them: the zip is
    read directly, its storages memory-mapped, and its pickle's opcodes parsed against an allowlist of
    what a dict of tensors needs; nothing is unpickled and torch is not imported.
``xarray``
    Any file xarray opens (netCDF, HDF5 through h5netcdf), with ``--inputs``/``--outputs`` variable names
    and a ``--sample-dim``.
"""

from __future__ import annotations

import contextlib
import math
import os
import pickletools
import struct
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pdeserve.datagen.importing import (
    Source,
    Trajectories,
    View,
    check_name,
    default_name,
    sample_map,
    windows,
    write_import,
)

FORMATS = ("the-well", "pdebench", "fno-mat", "neuraloperator-pt", "xarray")


@dataclass(frozen=True)
class ImportOptions:
    """What a reader may be told besides the file.

    Parameters
    ----------
    inputs, outputs : sequence of str, optional
        Source variables that become the operator's inputs and outputs, each ``NAME`` or ``NAME=FIELD``
        (renamed); required for ``xarray``, overriding the defaults elsewhere.
    input_steps : int
        States in a window of a time series.
    sample_dim : str
        The sample dimension of an ``xarray`` source.
    boundary : str, optional
        The boundary kind, overriding what the reader finds.
    """

    inputs: Sequence[str] | None = None
    outputs: Sequence[str] | None = None
    input_steps: int = 1
    sample_dim: str = "sample"
    boundary: str | None = None


Reader = Callable[[Path, ImportOptions, contextlib.ExitStack], Source]


def _renames(items: Sequence[str]) -> list[tuple[str, str]]:
    """``(source variable, field name)`` of ``NAME`` / ``NAME=FIELD`` items."""
    pairs = []
    for item in items:
        source, _, target = item.partition("=")
        if not source:
            raise ValueError(f"empty variable name in {item!r}")
        pairs.append((source, target or source))
    return pairs


def _require(container: Mapping[str, Any], name: str, path: Path, what: str) -> Any:
    if name not in container:
        raise ValueError(f"{path.name}: no variable {name!r} ({what})")
    return container[name]


def _stacked(channels: Sequence[tuple[str, View]], times: np.ndarray | None = None) -> Trajectories:
    """Trajectories of channels each stored ``(n_traj, n_states, *grid)``."""
    first = channels[0][1]
    first.expect(max(3, len(first.shape)), "trajectories, states, then 1 to 3 spatial axes")
    for _, view in channels:
        if view.shape != first.shape:
            raise ValueError(
                f"variable {view.name!r} has shape {view.shape}; expected {first.shape} like {first.name!r}"
            )
    return Trajectories(
        n_trajectories=first.shape[0],
        n_states=first.shape[1],
        grid=first.shape[2:],
        channels=[(name, view.describe()) for name, view in channels],
        read=lambda trajs, states: {name: view.read(trajs, states) for name, view in channels},
        dtypes={name: view.dtype for name, view in channels},
        times=times,
    )


def _boundary(options: ImportOptions, found: str) -> str:
    return options.boundary or found


# ---------------------------------------------------------------------------------------------- The Well


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _texts(value: Any) -> list[str]:
    return [_text(v) for v in np.atleast_1d(value)] if value is not None else []


def read_the_well(path: Path, options: ImportOptions, stack: contextlib.ExitStack) -> Source:
    """The Well's HDF5 file (see the module docstring)."""
    import h5py

    f = stack.enter_context(h5py.File(path, "r"))
    for group in ("t0_fields", "t1_fields", "t2_fields", "dimensions"):
        _require(f, group, path, "The Well's layout")
    dims = _texts(f["dimensions"].attrs.get("spatial_dims"))
    if not dims:
        raise ValueError(f"{path.name}: dimensions has no spatial_dims attribute")
    coords = {}
    for dim in dims:
        values = np.asarray(_require(f["dimensions"], dim, path, "a spatial coordinate")[...])
        coords[dim] = values.reshape(-1, values.shape[-1])[0]  # a sample-varying grid: the first's
    grid = tuple(len(coords[d]) for d in dims)
    times = np.asarray(f["dimensions"]["time"][...]) if "time" in f["dimensions"] else None
    n_traj = int(f.attrs.get("n_trajectories", 0)) or None

    states: list[tuple[str, View, tuple[int, ...]]] = []  # (field, view, component index)
    constants: list[tuple[str, View, tuple[int, ...]]] = []
    n_steps = None
    for order in range(3):
        group = f[f"t{order}_fields"]
        for name in _texts(group.attrs.get("field_names")) or list(group):
            data = _require(group, name, path, f"listed in t{order}_fields")
            view = View(data, f"t{order}_fields/{name}")
            sample_varying = bool(data.attrs.get("sample_varying", True))
            time_varying = bool(data.attrs.get("time_varying", True))
            if not all(bool(v) for v in np.atleast_1d(data.attrs.get("dim_varying", True))):
                raise ValueError(f"variable {view.name!r} varies along only some spatial axes; not supported")
            lead = view.shape[: int(sample_varying) + int(time_varying)]
            if view.shape != (*lead, *grid, *(len(dims),) * order) or (
                sample_varying and n_traj not in (None, lead[0])
            ):
                axes = ["n_traj"] * sample_varying + ["n_steps"] * time_varying
                axes += [str(n) for n in (*grid, *(len(dims),) * order)]
                if sample_varying and n_traj is not None:
                    axes[0] = str(n_traj)
                raise ValueError(
                    f"variable {view.name!r} has shape {view.shape}; expected ({', '.join(axes)})"
                )
            if sample_varying:
                n_traj = lead[0]
            if time_varying:
                steps = lead[-1]
                if n_steps not in (None, steps):
                    raise ValueError(f"variable {view.name!r} has {steps} steps; other fields have {n_steps}")
                n_steps = steps
            for component in np.ndindex(*(len(dims),) * order):
                suffix = "_" + "".join(dims[i] for i in component) if order else ""
                (states if time_varying else constants).append((name + suffix, view, component))
    if not states:
        raise ValueError(f"{path.name}: no time-varying field in t0_fields, t1_fields or t2_fields")
    if n_traj is None:
        raise ValueError(f"{path.name}: no field varies across trajectories and n_trajectories is not set")

    def fetch(view: View, component: tuple[int, ...], trajs: slice, steps: slice | None) -> np.ndarray:
        sample_varying = bool(view.raw.attrs.get("sample_varying", True))
        key = ((trajs,) if sample_varying else ()) + ((steps,) if steps is not None else ())
        values = view.read(*key, Ellipsis, *component)
        if not sample_varying:  # one value for every trajectory
            values = np.broadcast_to(values, (trajs.stop - trajs.start, *values.shape))
        return values

    def record(view: View, component: tuple[int, ...]) -> dict[str, Any]:
        return view.describe(component=list(component)) if component else view.describe()

    trajectories = Trajectories(
        n_trajectories=n_traj,
        n_states=n_steps,
        grid=grid,
        channels=[(name, record(view, c)) for name, view, c in states],
        read=lambda trajs, steps: {name: fetch(view, c, trajs, steps) for name, view, c in states},
        dtypes={name: view.dtype for name, view, _ in (*states, *constants)},
        constants=[(name, record(view, c)) for name, view, c in constants],
        read_constants=lambda trajs: {name: fetch(view, c, trajs, None) for name, view, c in constants},
        times=times,
    )
    conditions = []
    periodic_dims: set[str] = set()
    for key, group in f.get("boundary_conditions", {}).items():
        kind = _text(group.attrs.get("bc_type", "?"))
        on = _texts(group.attrs.get("associated_dims"))
        conditions.append(f"{key}: {kind} on {', '.join(on) or '?'}")
        if kind.upper() == "PERIODIC":
            periodic_dims.update(on)
    boundary = "periodic" if set(dims) <= periodic_dims else "dirichlet"
    parameters = {k: f.attrs[k] for k in _texts(f.attrs.get("simulation_parameters")) if k in f.attrs}
    for key, data in f.get("scalars", {}).items():
        varying = data.attrs.get("time_varying", False) or data.attrs.get("sample_varying", False)
        if not varying and data.shape == ():
            parameters[key] = data[()]
    return windows(
        "the-well",
        path,
        trajectories,
        options.input_steps,
        dims=dims,
        coordinates=coords,
        parameters=parameters,
        boundary=_boundary(options, boundary),
        boundary_conditions="; ".join(conditions) or "not stated",
    )


# ---------------------------------------------------------------------------------------------- PDEBench


def read_pdebench(path: Path, options: ImportOptions, stack: contextlib.ExitStack) -> Source:
    """PDEBench's HDF5 file (see the module docstring)."""
    import h5py

    f = stack.enter_context(h5py.File(path, "r"))
    coords = {d: np.asarray(f[f"{d}-coordinate"][...]) for d in ("x", "y", "z") if f"{d}-coordinate" in f}
    dims = [d for d in ("x", "y", "z") if d in coords]
    parameters = dict(f.attrs)
    if "nu" in f and "tensor" in f:  # Darcy: coefficient -> solution, stored (N, 1, X, Y)
        solution = View(f["tensor"], "tensor", pick=(1, 0))
        if View(f["tensor"], "tensor").full_shape[1:2] != (1,):
            raise ValueError(
                f"variable 'tensor' has shape {f['tensor'].shape}; expected (N, 1, X, Y) beside 'nu'"
            )
        return sample_map(
            "pdebench",
            path,
            [("nu", View(f["nu"], "nu"))],
            [("tensor", solution)],
            dims=dims or None,
            coordinates=coords,
            parameters=parameters,
            boundary=_boundary(options, "dirichlet"),
            boundary_conditions="as in the source (PDEBench Darcy flow: u = 0 on the boundary)",
        )
    if "tensor" in f:  # one field's time series: Burgers, advection, reaction-diffusion
        channels = [("tensor", View(f["tensor"], "tensor"))]
        boundary, text = "periodic", "periodic (PDEBench's 1D time series)"
    elif "density" in f:  # compressible Navier-Stokes
        names = [n for n in ("density", "pressure", "Vx", "Vy", "Vz") if n in f]
        for needed in ("pressure", "Vx"):
            _require(f, needed, path, "PDEBench compressible flow")
        channels = [(n, View(f[n], n)) for n in names]
        periodic = (
            "periodic" in path.name.lower()
        )  # PDEBench names its files ..._periodic_... or ..._trans_...
        boundary = "periodic" if periodic else "dirichlet"
        text = "periodic (file name)" if periodic else "outgoing ('trans') or not stated in the file name"
    else:
        raise ValueError(
            f"{path.name}: no variable 'tensor' or 'density' (PDEBench's Darcy, time series or "
            "compressible flow layouts)"
        )
    times = np.asarray(f["t-coordinate"][...]) if "t-coordinate" in f else None
    return windows(
        "pdebench",
        path,
        _stacked(channels, times),
        options.input_steps,
        dims=dims or None,
        coordinates=coords,
        parameters=parameters,
        boundary=_boundary(options, boundary),
        boundary_conditions=text,
    )


# -------------------------------------------------------------------------------------- FNO authors' .mat


def _mat_variables(path: Path, stack: contextlib.ExitStack) -> tuple[Mapping[str, View], str]:
    """The variables of a ``.mat`` file as views in MATLAB's axis order, and the MATLAB version."""
    import scipy.io

    try:
        major, _ = scipy.io.matlab.matfile_version(str(path))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path.name} is not a MATLAB file: {exc}") from None
    if major == 2:  # v7.3: HDF5, each variable stored column-major (axes reversed for h5py)
        import h5py

        f = stack.enter_context(h5py.File(path, "r"))
        views = {k: View(v, k, reverse=True) for k, v in f.items() if isinstance(v, h5py.Dataset)}
        return views, "7.3"
    contents = scipy.io.loadmat(str(path))  # v4/v5: read whole (a v5 variable is at most 2 GiB)
    return {k: View(v, k) for k, v in contents.items() if not k.startswith("__")}, "5"


def read_fno_mat(path: Path, options: ImportOptions, stack: contextlib.ExitStack) -> Source:
    """The FNO authors' ``.mat`` file (see the module docstring)."""
    variables, matlab = _mat_variables(path, stack)
    common: dict[str, Any] = {"parameters": {}, "extra": {"source_matlab_version": matlab}}

    def pick(pairs: Sequence[tuple[str, str]], what: str) -> list[tuple[str, View]]:
        return [(target, _require(variables, source, path, what)) for source, target in pairs]

    if options.inputs or options.outputs:
        if not (options.inputs and options.outputs):
            raise ValueError("--inputs and --outputs go together")
        return sample_map(
            "fno-mat",
            path,
            pick(_renames(options.inputs), "--inputs"),
            pick(_renames(options.outputs), "--outputs"),
            boundary=_boundary(options, "dirichlet"),
            boundary_conditions="not stated in the file",
            **common,
        )
    if "coeff" in variables or "sol" in variables:  # Darcy
        inputs, outputs = pick([("coeff", "coeff")], "FNO Darcy"), pick([("sol", "sol")], "FNO Darcy")
        inputs[0][1].expect(3, "(N, X, Y)")
        return sample_map(
            "fno-mat",
            path,
            inputs,
            outputs,
            boundary=_boundary(options, "dirichlet"),
            boundary_conditions="u = 0 on the boundary (FNO Darcy flow)",
            **common,
        )
    a = _require(
        variables, "a", path, "FNO Burgers or Navier-Stokes: 'a' and 'u', or Darcy: 'coeff' and 'sol'"
    )
    u = _require(variables, "u", path, "FNO Burgers or Navier-Stokes")
    periodic = {"boundary": _boundary(options, "periodic"), "boundary_conditions": "periodic (FNO data)"}
    if len(u.shape) == len(a.shape):  # Burgers: initial state -> state at the final time
        return sample_map("fno-mat", path, [("a", a)], [("u", u)], **periodic, **common)
    if len(u.shape) != len(a.shape) + 1 or u.shape[:-1] != a.shape:
        raise ValueError(
            f"variable 'u' has shape {u.shape}; expected {a.shape} (Burgers) or {(*a.shape, 'T')} "
            "(Navier-Stokes) for 'a' of shape {a.shape}"
        )

    def states(trajs: slice, steps: slice) -> dict[str, np.ndarray]:
        # The states are a (t = 0) then u[..., 0], u[..., 1], ...: u's time axis is its last.
        parts = []
        if steps.start == 0:
            parts.append(a.read(trajs)[:, None])
        later = u.read(trajs, Ellipsis, slice(max(steps.start - 1, 0), steps.stop - 1))
        parts.append(np.moveaxis(later, -1, 1))
        return {"u": np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]}

    times = variables["t"].read().reshape(-1) if "t" in variables else None
    trajectories = Trajectories(
        n_trajectories=a.shape[0],
        n_states=u.shape[-1] + 1,
        grid=a.shape[1:],
        channels=[("u", {"variable": "a, u", "state_0": a.describe(), "states_1_on": u.describe()})],
        read=states,
        dtypes={"u": np.result_type(a.dtype, u.dtype)},
        times=times,
    )
    return windows("fno-mat", path, trajectories, options.input_steps, **periodic, **common)


# ----------------------------------------------------------------------------------- neuraloperator .pt

# The storage classes torch.save names in a tensor's persistent id, as numpy dtypes; those numpy cannot
# hold as real numbers are kept by name, for the error.
_STORAGES: dict[str, np.dtype | str] = {
    f"torch.{kind}Storage": np.dtype(code)
    for kind, code in [
        ("Float", "f4"), ("Double", "f8"), ("Half", "f2"), ("Long", "i8"), ("Int", "i4"),
        ("Short", "i2"), ("Char", "i1"), ("Byte", "u1"), ("Bool", "?"),
    ]
} | {"torch.BFloat16Storage": "bfloat16", "torch.ComplexFloatStorage": "complex64",
     "torch.ComplexDoubleStorage": "complex128"}  # fmt: skip
_ORDERED_DICT, _REBUILD = "collections.OrderedDict", "torch._utils._rebuild_tensor_v2"
# Most bytes of a .pt file's pickle, and most elements of one of its tensors (a view may repeat its
# storage's elements, stride 0, as torch's expand() does): the work a file can ask for is bounded.
MAX_PICKLE_BYTES, MAX_TENSOR_ELEMENTS = 1 << 20, 1 << 40
_PUSH = {"NEWTRUE": True, "NEWFALSE": False, "NONE": None}
_LITERALS = {"BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8", "BININT", "BININT1", "BININT2", "LONG1"}


# What the parsed pickle holds in place of torch's objects: an allowlisted global, a storage named by
# a persistent id (not yet mapped), a tensor's view into one.
@dataclass(frozen=True)
class _Global:
    name: str


@dataclass(frozen=True)
class _Storage:
    dtype: np.dtype | str
    key: str
    numel: int


@dataclass(frozen=True)
class _Tensor:
    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _parse_pickle(path: Path, data: bytes) -> object:
    """What the pickle ``data`` of a ``torch.save`` file describes, found by interpreting its opcodes
    against an allowlist (dicts, tuples, strings, numbers, torch's tensor rebuild): nothing is imported
    or called. ``ValueError`` names the first global or opcode outside the allowlist."""

    def refuse(what: str) -> ValueError:
        return ValueError(f"{path.name} holds objects other than tensors ({what}); refused")

    def pop(count: int) -> list[Any]:
        if not 0 <= count <= len(stack):
            raise IndexError("stack underflow")
        items = stack[len(stack) - count :]
        del stack[len(stack) - count :]
        return items

    try:
        ops = list(pickletools.genops(data))
    except ValueError as exc:
        raise ValueError(f"{path.name}: its data.pkl is no pickle ({exc})") from None
    stack: list[Any] = []
    marks: list[int] = []
    memo: dict[int, Any] = {}
    try:
        for op, arg, _ in ops:
            name = op.name
            if name in _LITERALS:
                stack.append(arg)
            elif name in _PUSH:
                stack.append(_PUSH[name])
            elif name in ("EMPTY_DICT", "EMPTY_TUPLE"):
                stack.append({} if name == "EMPTY_DICT" else ())
            elif name == "MARK":
                marks.append(len(stack))
            elif name.startswith("TUPLE"):
                stack.append(tuple(pop(int(name[5:]) if name[5:] else len(stack) - marks.pop())))
            elif name in ("BINPUT", "LONG_BINPUT", "MEMOIZE"):
                memo[len(memo) if arg is None else arg] = stack[-1]
            elif name in ("BINGET", "LONG_BINGET"):
                stack.append(memo[arg])
            elif name in ("SETITEM", "SETITEMS"):
                items = pop(2 if name == "SETITEM" else len(stack) - marks.pop())
                # Keys are names or numbers: a key of nested tuples, shared through the memo, would cost
                # time exponential in its depth to hash.
                keys_ok = all(type(k) in (str, int) for k in items[::2])
                if len(items) % 2 or not keys_ok or not isinstance(stack[-1], dict):
                    raise TypeError("SETITEMS")
                stack[-1].update(zip(items[::2], items[1::2], strict=True))
            elif name in ("GLOBAL", "STACK_GLOBAL"):
                parts = arg.split(" ") if name == "GLOBAL" else pop(2)
                if not all(type(part) is str for part in parts):
                    raise TypeError("STACK_GLOBAL")
                qualname = ".".join(parts)
                if qualname not in (_ORDERED_DICT, _REBUILD, *_STORAGES):
                    raise refuse(qualname)
                stack.append(_Global(qualname))
            elif name == "BINPERSID":
                match stack.pop():
                    case ("storage", _Global(name=kind), str(key), _location, int(numel)) if (
                        kind in _STORAGES
                    ):
                        stack.append(_Storage(_STORAGES[kind], key, numel))
                    case _:
                        raise refuse("a persistent id other than a storage")
            elif name == "REDUCE":
                func, args = pop(2)
                if func == _Global(_ORDERED_DICT) and args == ():
                    stack.append({})
                elif func == _Global(_REBUILD):
                    stack.append(_rebuilt(path, args))
                else:
                    raise refuse(func.name if isinstance(func, _Global) else "a call")
            elif name == "STOP":
                return stack.pop()
            elif name not in ("PROTO", "FRAME"):
                raise refuse(f"pickle opcode {name}")
    except (IndexError, KeyError, TypeError) as exc:
        raise ValueError(f"{path.name}: its data.pkl is malformed ({exc})") from None
    raise ValueError(f"{path.name}: its data.pkl has no STOP")


def _rebuilt(path: Path, args: object) -> _Tensor:
    """``torch._utils._rebuild_tensor_v2``'s arguments (storage, offset, size, stride, requires_grad,
    backward hooks[, metadata]) checked, as a tensor to memory-map later."""
    ints = lambda t: isinstance(t, tuple) and all(type(n) is int for n in t)  # noqa: E731
    if not (isinstance(args, tuple) and len(args) in (6, 7) and isinstance(args[0], _Storage)):
        raise ValueError(f"{path.name}: a tensor's rebuild arguments are malformed")
    storage, offset, size, stride, _, _, *metadata = args
    if type(offset) is not int or not ints(size) or not ints(stride) or len(size) != len(stride):
        raise ValueError(f"{path.name}: a tensor's offset, size or stride is malformed")
    if metadata and (not isinstance(metadata[0], dict) or any(metadata[0].values())):
        # torch's lazy negation and conjugation bits: the values are not the storage's
        raise ValueError(f"{path.name} holds a tensor with lazy negation or conjugation; refused")
    return _Tensor(storage, offset, size, stride)


def _tensors(path: Path) -> dict[str, np.ndarray]:
    """The tensors of a ``torch.save`` dict as read-only numpy arrays memory-mapped from the file: the
    zip is read directly and its ``data.pkl`` parsed against an allowlist, never unpickled. ``ValueError``
    for anything but a dict of tensors (and ignored plain values), and for a corrupt file."""
    try:
        with zipfile.ZipFile(path) as archive:
            infos = {info.filename: info for info in archive.infolist()}
            pkl = next((n for n in infos if n.count("/") == 1 and n.endswith("/data.pkl")), None)
            if pkl is None:
                raise zipfile.BadZipFile("no data.pkl")
            prefix = pkl[: -len("data.pkl")]
            info = infos[pkl]
            # torch.save stores it uncompressed, and a dict of tensors' pickle is small: bounded work
            if info.compress_type != zipfile.ZIP_STORED or info.file_size > MAX_PICKLE_BYTES:
                raise ValueError(f"{path.name}: its data.pkl is compressed or above {MAX_PICKLE_BYTES} bytes")
            contents = _parse_pickle(path, archive.read(pkl))
            big = prefix + "byteorder" in infos and archive.read(prefix + "byteorder").strip() == b"big"
    except zipfile.BadZipFile as exc:
        raise ValueError(f"{path.name} is not a torch.save zip file: {exc}") from None
    if not isinstance(contents, dict):
        kind = "Tensor" if isinstance(contents, _Tensor) else type(contents).__name__
        raise ValueError(f"{path.name} holds a {kind}; expected a dict of tensors")
    storages: dict[_Storage, np.ndarray] = {}  # by key, dtype and size: a file may name a key twice
    arrays = {}
    for key, tensor in contents.items():
        if not isinstance(tensor, _Tensor):
            continue
        storage = tensor.storage
        if isinstance(storage.dtype, str):
            raise ValueError(f"variable {key!r} has dtype {storage.dtype}; only real numbers can be imported")
        if storage not in storages:
            info = infos.get(f"{prefix}data/{storage.key}")
            dtype = storage.dtype.newbyteorder(">" if big else "<")
            storages[storage] = _mapped(path, info, storage.key, dtype, storage.numel)
        base, offset, size, stride = storages[storage], tensor.offset, tensor.size, tensor.stride
        # a corrupt file must not make a view reach past its storage
        last = (
            offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True)) if all(size) else offset - 1
        )
        if min((offset, *size, *stride)) < 0 or last >= base.size:
            raise ValueError(
                f"{path.name}: variable {key!r} (offset {offset}, size {size}, stride {stride}) reaches "
                f"past its storage of {base.size} elements"
            )
        if math.prod(size) > MAX_TENSOR_ELEMENTS:
            raise ValueError(f"{path.name}: variable {key!r} has {math.prod(size)} elements; too many")
        try:
            arrays[str(key)] = np.lib.stride_tricks.as_strided(
                base[offset:], shape=size, strides=tuple(s * base.itemsize for s in stride), writeable=False
            )
        except OverflowError:  # a stride no address space holds
            raise ValueError(f"{path.name}: variable {key!r} has a stride out of range: {stride}") from None
    return arrays


def _mapped(path: Path, info: zipfile.ZipInfo | None, key: str, dtype: np.dtype, numel: int) -> np.ndarray:
    """The zip member of storage ``key``, memory-mapped in place (torch.save stores it uncompressed)."""
    if info is None or info.file_size != numel * dtype.itemsize:
        raise ValueError(f"{path.name}: storage {key!r} is missing or does not hold {numel} {dtype}")
    if info.compress_type != zipfile.ZIP_STORED:
        raise ValueError(f"{path.name}: storage {key!r} is compressed; it cannot be memory-mapped")
    if numel == 0:
        return np.empty(0, dtype)
    with path.open("rb") as f:  # the local header's name and extra lengths, not the central directory's
        f.seek(info.header_offset)
        header = f.read(30)
    if len(header) < 30 or header[:4] != b"PK\x03\x04":
        raise ValueError(f"{path.name}: storage {key!r} has no local zip header")
    name_length, extra_length = struct.unpack("<HH", header[26:30])
    offset = info.header_offset + 30 + name_length + extra_length
    if offset + info.file_size > path.stat().st_size:
        raise ValueError(f"{path.name}: storage {key!r} runs past the end of the file")
    return np.memmap(path, dtype, mode="r", offset=offset, shape=(numel,))


def _channels(target: str, view: View, grid: tuple[int, ...]) -> list[tuple[str, View]]:
    """A ``(N, *grid)`` view as one field, or ``(N, C, *grid)`` as ``C`` fields ``target_0..`` (one
    field, unnamed by index, when ``C`` is 1)."""
    if view.shape[1:] == grid:
        return [(target, view)]
    if len(view.shape) == len(grid) + 2 and view.shape[2:] == grid:
        count = view.shape[1]
        if count == 1:
            return [(target, View(view.raw, view.name, pick=(1, 0)))]
        return [(f"{target}_{c}", View(view.raw, view.name, pick=(1, c))) for c in range(count)]
    raise ValueError(f"variable {view.name!r} has shape {view.shape}; expected (N, {grid}) or (N, C, {grid})")


def read_neuraloperator_pt(path: Path, options: ImportOptions, stack: contextlib.ExitStack) -> Source:
    """neuraloperator's ``.pt`` dict (see the module docstring). The fields are named ``a`` (from ``x``)
    and ``u`` (from ``y``) unless ``--inputs``/``--outputs`` say otherwise: ``x`` and ``y`` name the grid's
    dimensions."""
    arrays = _tensors(path)
    ins = _renames(options.inputs or ["x=a"])
    outs = _renames(options.outputs or ["y=u"])
    views = {
        source: View(_require(arrays, source, path, "a tensor of the dict"), source)
        for source, _ in ins + outs
    }
    for view in views.values():
        if len(view.shape) < 2:
            raise ValueError(f"variable {view.name!r} has shape {view.shape}; expected (N, ...)")
    shapes = [v.shape[1:] for v in views.values()]
    grid = shapes[0]
    for shape in shapes:  # the longest common trailing shape, a leading singleton (channel) axis dropped
        common = 0
        while (
            common < min(len(grid), len(shape))
            and grid[len(grid) - 1 - common] == shape[len(shape) - 1 - common]
        ):
            common += 1
        grid = grid[len(grid) - common :]
    if grid[:1] == (1,) and len(grid) > 1:
        grid = grid[1:]
    if not grid:
        raise ValueError(f"{path.name}: the tensors {', '.join(views)} share no grid")

    def fields(pairs: Sequence[tuple[str, str]]) -> list[tuple[str, View]]:
        return [item for source, target in pairs for item in _channels(target, views[source], grid)]

    return sample_map(
        "neuraloperator-pt",
        path,
        fields(ins),
        fields(outs),
        parameters={},
        boundary=_boundary(options, "dirichlet"),
        boundary_conditions="not stated in the file",
    )


# ------------------------------------------------------------------------------------------------ xarray


def read_xarray(path: Path, options: ImportOptions, stack: contextlib.ExitStack) -> Source:
    """Any file xarray opens, with ``--inputs``/``--outputs`` and ``--sample-dim`` (opened lazily: each
    block reads only its samples)."""
    import xarray as xr

    if not (options.inputs and options.outputs):
        raise ValueError("the xarray format needs --inputs and --outputs (variable names, comma-separated)")
    if path.is_dir():  # its content has no one sha256 to record
        raise ValueError(
            f"{path.name} is a folder (a Zarr store?): import a file; xarray writes one with "
            "`xr.open_zarr(store).to_netcdf('data.nc')`"
        )
    try:
        ds = stack.enter_context(xr.open_dataset(path, cache=False))
    except (ValueError, OSError) as exc:
        raise ValueError(f"xarray cannot open {path.name}: {str(exc).splitlines()[0]}") from None
    sample = options.sample_dim
    ins, outs = _renames(options.inputs), _renames(options.outputs)
    dims: tuple[str, ...] | None = None
    for source, _ in ins + outs:
        if source not in ds.data_vars:
            raise ValueError(
                f"{path.name}: no variable {source!r} (variables: {', '.join(map(str, ds.data_vars))})"
            )
        var = ds[source]
        if sample not in var.dims:
            raise ValueError(
                f"variable {source!r} has dimensions {var.dims}, not the sample dimension {sample!r}"
            )
        others = tuple(str(d) for d in var.dims if d != sample)
        if dims is None:
            dims = others
        elif set(others) != set(dims):
            raise ValueError(f"variable {source!r} has dimensions {var.dims}; expected {sample!r} and {dims}")

    def view(source: str) -> View:
        return View(ds[source].transpose(sample, *dims), source)

    coords = {d: np.asarray(ds[d].values) for d in dims if d in ds.coords}
    numbers = {k: v for k, v in ds.attrs.items() if isinstance(v, (int, float, np.integer, np.floating))}
    return sample_map(
        "xarray",
        path,
        [(target, view(source)) for source, target in ins],
        [(target, view(source)) for source, target in outs],
        dims=dims,
        coordinates=coords,
        parameters=numbers,
        boundary=_boundary(options, "dirichlet"),
        boundary_conditions="not stated in the file",
    )


READERS: dict[str, Reader] = {
    "the-well": read_the_well,
    "pdebench": read_pdebench,
    "fno-mat": read_fno_mat,
    "neuraloperator-pt": read_neuraloperator_pt,
    "xarray": read_xarray,
}


def detect_format(path: Path) -> str:
    """The format of ``path`` from its name and first bytes (``ValueError`` when it cannot be told)."""
    import h5py

    if path.suffix.lower() in (".pt", ".pth"):
        return "neuraloperator-pt"
    if path.is_dir():
        return "xarray"
    with open(path, "rb") as handle:
        head = handle.read(128)
    if path.suffix.lower() == ".mat" or head.startswith(b"MATLAB"):
        return "fno-mat"
    if h5py.is_hdf5(path):
        with h5py.File(path, "r") as f:
            if "t0_fields" in f or "t1_fields" in f:
                return "the-well"
            if "tensor" in f or "density" in f or "x-coordinate" in f:
                return "pdebench"
        return "xarray"
    if head.startswith(b"CDF"):  # netCDF 3
        return "xarray"
    raise ValueError(f"cannot tell the format of {path.name}; name it ({', '.join(FORMATS)})")


def import_file(
    format: str,
    source: str | os.PathLike,
    out: str | os.PathLike,
    name: str | None = None,
    options: ImportOptions | None = None,
    *,
    overwrite: bool = False,
    chunk_size: int = 32,
    progress: bool = True,
) -> Path:
    """Import ``source`` (in ``format``, or ``auto``) as the pdeserve dataset ``out`` whose family is
    ``name`` (default: from the source's file name); returns ``out``."""
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    name = check_name(name if name is not None else default_name(path))
    fmt = detect_format(path) if format == "auto" else format
    if fmt not in READERS:
        raise ValueError(f"unknown format {format!r}; known: auto, {', '.join(FORMATS)}")
    with contextlib.ExitStack() as stack:
        options = options or ImportOptions()
        found = READERS[fmt](path, options, stack)
        if options.input_steps != 1 and "input_steps" not in found.extra:
            raise ValueError(f"--input-steps applies to time series; {path.name} holds input/output pairs")
        return write_import(found, out, name, overwrite=overwrite, chunk_size=chunk_size, progress=progress)
