"""The shared half of ``pdeserve datagen import``: what a source file offers, and the chunked writer.

A format's reader (``importers.py``) describes its file as a :class:`Source`: the spatial dimensions and
their coordinates, the fields (each an operator input or output, with the source variable it came from),
and a generator of blocks of samples read lazily from the file. Two shapes cover every format:
:func:`sample_map` (each source sample is one input/output pair, e.g. a Darcy coefficient and its
solution) and :func:`windows` (trajectories of states become pairs ``states t-K+1..t -> state t+1``, each
state of the window a separate input channel ``u@t-1``, ``u@t``, the output ``u@t+1``), so an imported
dataset is always a steady map as far as training is concerned.

:func:`write_import` streams the blocks into a pdeserve dataset: the layout ``write_dataset`` writes
(h5netcdf, named dimensions ``sample`` and the spatial ones, coordinate variables, chunked by sample,
compressed), written to ``<out>.partial`` and renamed when complete, refusing NaN or Inf at the first
bad sample, and recording the source's format, sha256, variables and base name in the root attributes.
Only ``chunk_size`` samples (plus a window's extra states) are in memory at a time.
"""

from __future__ import annotations

import hashlib
import json
import keyword
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from pdeserve.datagen.dataset import SCHEMA_VERSION, _exclusive, publish_file

# A dataset name (the family name of an imported file): letters, digits, '-' and '_', a letter first.
NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
_BOUNDARIES = ("periodic", "dirichlet", "neumann")


def check_name(name: str) -> str:
    """``name`` if it can name an imported family; ``ValueError`` otherwise (or if a registered family
    has it: its models would be checked against that family's solver)."""
    from pdeserve.datagen.families import families

    if not NAME.fullmatch(name):
        raise ValueError(
            f"--name {name!r} is not a simple identifier (a letter, then letters, digits, '-' or '_', "
            "at most 64 characters)"
        )
    if name in families():
        raise ValueError(f"--name {name!r} is a registered PDE family's name; choose another")
    return name


def default_name(path: Path) -> str:
    """A dataset name from a file name: its stem, lower case, other characters as '-', prefixed with
    ``imported-`` where it would not start with a letter or would be a registered family's name."""
    from pdeserve.datagen.families import families

    stem = re.sub(r"[^a-z0-9_-]+", "-", path.stem.lower()).strip("-_")
    name = stem if stem[:1].isalpha() and stem not in families() else f"imported-{stem}".rstrip("-")
    return name[:64].rstrip("-_")


def sha256_of(path: Path, block: int = 1 << 20) -> str:
    """sha256 of a file, read ``block`` bytes at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def storage_dtype(name: str, dtype: Any) -> np.dtype:
    """The dtype a source variable is stored as: float32/float64 as they are, float16 as float32, integers
    as float64; ``ValueError`` naming the variable for anything else (complex, strings, objects)."""
    dtype = np.dtype(dtype)
    if dtype in (np.float32, np.float64):
        return dtype
    if dtype == np.float16:
        return np.dtype(np.float32)
    if dtype.kind in "iub":
        return np.dtype(np.float64)
    raise ValueError(f"variable {name!r} has dtype {dtype}; only real numbers can be imported")


@dataclass(frozen=True)
class View:
    """A source variable read lazily, in its logical axis order.

    Parameters
    ----------
    raw : array-like
        An h5py dataset, a numpy array (possibly memory-mapped) or an xarray DataArray: indexing it reads
        only the part asked for.
    name : str
        The variable's name in the source file, for messages and ``source_variables``.
    reverse : bool
        The stored axes are the logical ones reversed (a MATLAB v7.3 file read through h5py: MATLAB
        writes column-major, so HDF5 sees ``(T, Y, X, N)`` for MATLAB's ``(N, X, Y, T)``).
    pick : (int, int), optional
        ``(axis, index)``: the view is the variable at that index of that logical axis (one channel of
        ``(N, C, X, Y)``, or a singleton axis dropped); the axis is not part of the view's shape.
    """

    raw: Any
    name: str
    reverse: bool = False
    pick: tuple[int, int] | None = None

    @property
    def full_shape(self) -> tuple[int, ...]:
        """The variable's logical shape (the picked axis included)."""
        shape = tuple(int(n) for n in self.raw.shape)
        return shape[::-1] if self.reverse else shape

    @property
    def shape(self) -> tuple[int, ...]:
        shape = self.full_shape
        if self.pick is None:
            return shape
        return shape[: self.pick[0]] + shape[self.pick[0] + 1 :]

    @property
    def dtype(self) -> np.dtype:
        return storage_dtype(self.name, self.raw.dtype)

    def read(self, *key: Any) -> np.ndarray:
        """``view[key]`` in logical axis order (leading axes, or an ``Ellipsis`` then trailing ones), as
        the storage dtype."""
        if Ellipsis not in key:
            key = (*key, Ellipsis)
        if self.pick is not None:
            axis, index = self.pick
            lead = key[: key.index(Ellipsis)]
            key = (*lead, *[slice(None)] * (axis - len(lead)), index, Ellipsis)
        # A reversed variable is indexed with the key reversed, and its values' axes reversed back.
        values = np.transpose(np.asarray(self.raw[key[::-1]])) if self.reverse else np.asarray(self.raw[key])
        return values.astype(self.dtype, copy=False)

    def describe(self, **more: Any) -> dict[str, Any]:
        """The JSON record of this variable in ``source_variables``."""
        record: dict[str, Any] = {
            "variable": self.name,
            "shape": list(self.full_shape),
            "dtype": str(np.dtype(self.raw.dtype)),
        }
        if self.reverse:
            record["stored_shape"] = list(self.full_shape[::-1])
        if self.pick is not None:
            record["index"] = {"axis": self.pick[0], "index": self.pick[1]}
        return {**record, **more}

    def expect(self, ndim: int, what: str) -> None:
        """``ValueError`` unless the variable has ``ndim`` axes (``what`` says which)."""
        if len(self.shape) != ndim:
            raise ValueError(f"variable {self.name!r} has shape {self.shape}; expected {ndim} axes ({what})")


@dataclass(frozen=True)
class Field:
    """One field of the imported dataset.

    Parameters
    ----------
    name : str
        Its variable name in the dataset (``u``, ``u@t-1``).
    description : str
        What it is, with its source (the family's field description).
    source : dict
        Its record in ``source_variables`` (variable, shape, dtype, and which part of it).
    dtype : numpy dtype
        Storage dtype.
    """

    name: str
    description: str
    source: dict[str, Any]
    dtype: np.dtype


Block = tuple[int, dict[str, np.ndarray]]
"""The first sample index of a block and each field's values there, ``(samples, *grid)``."""


@dataclass(frozen=True)
class Source:
    """A source file as an importable dataset.

    Parameters
    ----------
    format : str
        The format's name (recorded as ``source_format``).
    path : Path
        The source file.
    dims : tuple of str
        Spatial dimension names, in axis order.
    coordinates : dict of str to ndarray
        One 1-D coordinate array per spatial dimension.
    inputs, outputs : tuple of Field
        The operator's input and output fields.
    n_samples : int
        Samples of the imported dataset.
    blocks : callable
        ``blocks(chunk_size) -> iterator of Block``, in sample order, at most ``chunk_size`` samples each.
    locate : callable
        ``locate(sample) -> str``: where a sample comes from in the source, for messages.
    parameters : dict
        Scalars recorded from the source (``parameters_json``).
    boundary : str
        ``periodic``, ``dirichlet`` or ``neumann`` (the family's boundary kind; non-periodic sources are
        ``dirichlet`` unless stated).
    boundary_conditions : str
        The boundary conditions as the source states them.
    extra : dict
        Further root attributes (e.g. ``input_steps`` of windows) and JSON-able notes for
        ``source_variables`` under ``extra["notes"]``.
    """

    format: str
    path: Path
    dims: tuple[str, ...]
    coordinates: dict[str, np.ndarray]
    inputs: tuple[Field, ...]
    outputs: tuple[Field, ...]
    n_samples: int
    blocks: Callable[[int], Iterator[Block]]
    locate: Callable[[int], str]
    parameters: dict[str, Any]
    boundary: str
    boundary_conditions: str
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.n_samples < 1:
            raise ValueError(f"{self.path.name} holds no samples to import")
        if self.boundary not in _BOUNDARIES:
            raise ValueError(f"boundary kind must be one of {', '.join(_BOUNDARIES)}, got {self.boundary!r}")
        names = [f.name for f in (*self.inputs, *self.outputs)]
        clash = sorted(set(names) & {"sample", *self.dims}) or sorted(
            {n for n in names if names.count(n) > 1}
        )
        if clash:
            raise ValueError(f"field name {clash[0]!r} is used twice (as a field or a dimension)")
        for dim in self.dims:
            if dim in ("sample", "t"):
                raise ValueError(
                    f"dimension {dim!r} cannot be a spatial dimension of an imported dataset (time "
                    "series are imported as windows of states)"
                )


def _scalars(values: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON scalars of ``values`` whose names can be dataclass fields (the family's parameters)."""
    out = {}
    for key, value in values.items():
        value = value.item() if isinstance(value, np.generic) else value
        if isinstance(value, bytes):
            value = value.decode(errors="replace")
        # Keys become a dataclass's fields: identifiers, neither keywords nor dunder names.
        usable = key.isidentifier() and not keyword.iskeyword(key) and not key.startswith("__")
        if usable and isinstance(value, (bool, int, float, str)):
            out[key] = value
    return out


def sample_map(
    format: str,
    path: Path,
    inputs: Sequence[tuple[str, View]],
    outputs: Sequence[tuple[str, View]],
    *,
    dims: Sequence[str] | None = None,
    coordinates: Mapping[str, np.ndarray] | None = None,
    **common: Any,
) -> Source:
    """A source whose samples are the leading axis of every variable: ``inputs`` and ``outputs`` are
    ``(field name, view)``, each view ``(N, *grid)``. ``dims``
    name the grid's axes (default ``x, y, z``) and ``coordinates`` give them (default: the grid index).
    ``common``: the remaining :class:`Source` arguments (parameters, boundary, ...)."""
    views = [*inputs, *outputs]
    first = views[0][1]
    n, grid = first.shape[0], first.shape[1:]
    for _, view in views:
        if view.shape[0] != n or view.shape[1:] != grid:
            raise ValueError(
                f"variable {view.name!r} has shape {view.shape}, which does not match {first.name!r}'s "
                f"{first.shape} (same samples and grid expected)"
            )
    if not 1 <= len(grid) <= 3:
        raise ValueError(f"variable {first.name!r} has shape {first.shape}: a grid of 1 to 3 axes expected")
    dims = tuple(dims or ("x", "y", "z")[: len(grid)])
    coords = _coordinates(dims, grid, coordinates)

    def blocks(chunk: int) -> Iterator[Block]:
        for lo in range(0, n, chunk):
            hi = min(lo + chunk, n)
            yield lo, {name: view.read(slice(lo, hi)) for name, view in views}

    def as_field(name: str, view: View) -> Field:
        return Field(name, f"{view.name} of {path.name}", view.describe(), view.dtype)

    return Source(
        format=format,
        path=path,
        dims=dims,
        coordinates=coords,
        inputs=tuple(as_field(*pair) for pair in inputs),
        outputs=tuple(as_field(*pair) for pair in outputs),
        n_samples=n,
        blocks=blocks,
        locate=lambda i: f"source sample {i}",
        **common,
    )


def _coordinates(
    dims: Sequence[str], grid: Sequence[int], given: Mapping[str, np.ndarray] | None
) -> dict[str, np.ndarray]:
    if not 1 <= len(grid) <= 3 or len(dims) != len(grid):
        raise ValueError(
            f"a grid of shape {tuple(grid)} and dimensions {tuple(dims)}: 1 to 3 named axes expected"
        )
    coords = {}
    for dim, size in zip(dims, grid, strict=True):
        values = None if given is None else given.get(dim)
        if values is None:
            values = np.arange(size, dtype=np.float64)
        values = np.asarray(values).reshape(-1)
        if len(values) != size:
            raise ValueError(f"coordinate {dim!r} has {len(values)} values for a grid axis of {size}")
        coords[dim] = values
    return coords


@dataclass(frozen=True)
class Trajectories:
    """Time series of states in a source file, for :func:`windows`.

    Parameters
    ----------
    n_trajectories, n_states : int
        Trajectories and states per trajectory.
    grid : tuple of int
        The spatial shape of one state.
    channels : sequence of (str, dict)
        Each state channel's name and its ``source_variables`` record.
    read : callable
        ``read(trajectories, states) -> {channel: (n_traj, n_states, *grid)}`` for two slices.
    constants : sequence of (str, dict)
        Fields constant in time (inputs of every window), with their records.
    read_constants : callable, optional
        ``read_constants(trajectories) -> {name: (n_traj, *grid)}``.
    dtypes : dict of str to dtype
        Storage dtype of every channel and constant.
    times : ndarray, optional
        The time of each state, recorded.
    """

    n_trajectories: int
    n_states: int
    grid: tuple[int, ...]
    channels: Sequence[tuple[str, dict[str, Any]]]
    read: Callable[[slice, slice], dict[str, np.ndarray]]
    dtypes: Mapping[str, np.dtype]
    constants: Sequence[tuple[str, dict[str, Any]]] = ()
    read_constants: Callable[[slice], dict[str, np.ndarray]] | None = None
    times: np.ndarray | None = None


def window_name(channel: str, offset: int) -> str:
    """The field of a channel's state ``offset`` steps from a window's last input (``u@t-1``, ``u@t``,
    ``u@t+1``)."""
    return f"{channel}@t" if offset == 0 else f"{channel}@t{offset:+d}"


def windows(
    format: str,
    path: Path,
    trajectories: Trajectories,
    input_steps: int,
    *,
    dims: Sequence[str] | None = None,
    coordinates: Mapping[str, np.ndarray] | None = None,
    **common: Any,
) -> Source:
    """A source of windows over ``trajectories``: every ``input_steps`` consecutive states (each channel
    of each state a separate input field, after the constant fields) map to the next state. Samples are
    trajectory-major: trajectory ``i``'s windows end at states ``K-1 .. n_states-2``."""
    k = input_steps
    if k < 1:
        raise ValueError(f"--input-steps must be at least 1, got {k}")
    per = trajectories.n_states - k  # windows per trajectory
    if per < 1:
        raise ValueError(
            f"{k} input steps need at least {k + 1} states per trajectory; {path.name} has "
            f"{trajectories.n_states}"
        )
    dims = tuple(dims or ("x", "y", "z")[: len(trajectories.grid)])
    coords = _coordinates(dims, trajectories.grid, coordinates)
    offsets = range(1 - k, 1)

    def state_field(channel: str, record: dict[str, Any], offset: int) -> Field:
        where = {0: "the window's last state t", 1: "the next state t+1"}.get(offset, f"state t{offset:+d}")
        text = f"{channel} at {where} ({record['variable']} of {path.name})"
        return Field(
            window_name(channel, offset), text, {**record, "step": offset}, trajectories.dtypes[channel]
        )

    constant_fields = tuple(
        Field(
            name,
            f"{name}, constant in time ({record['variable']} of {path.name})",
            record,
            trajectories.dtypes[name],
        )
        for name, record in trajectories.constants
    )
    inputs = constant_fields + tuple(
        state_field(channel, record, offset)
        for offset in offsets
        for channel, record in trajectories.channels
    )
    outputs = tuple(state_field(channel, record, 1) for channel, record in trajectories.channels)

    def blocks(chunk: int) -> Iterator[Block]:
        step_block = min(per, chunk)
        traj_block = max(1, chunk // per)
        n = trajectories.n_trajectories
        for t0 in range(0, n, traj_block):
            trajs = slice(t0, min(t0 + traj_block, n))
            constants = trajectories.read_constants(trajs) if trajectories.read_constants else {}
            for w0 in range(0, per, step_block):
                w1 = min(w0 + step_block, per)
                states = trajectories.read(trajs, slice(w0, w1 + k))
                count = (trajs.stop - trajs.start) * (w1 - w0)
                data: dict[str, np.ndarray] = {}
                for name, values in constants.items():
                    data[name] = np.repeat(values, w1 - w0, axis=0)
                for offset in (*offsets, 1):
                    for channel, _ in trajectories.channels:
                        start = k - 1 + offset
                        part = states[channel][:, start : start + w1 - w0]
                        data[window_name(channel, offset)] = part.reshape(count, *part.shape[2:])
                yield t0 * per + w0, data

    notes = {"input_steps": k}
    if trajectories.times is not None:
        notes["times"] = [float(t) for t in np.asarray(trajectories.times).reshape(-1)]
    extra = {**common.pop("extra", {}), "input_steps": k, "notes": notes}
    return Source(
        format=format,
        path=path,
        dims=dims,
        coordinates=coords,
        inputs=inputs,
        outputs=outputs,
        n_samples=trajectories.n_trajectories * per,
        blocks=blocks,
        locate=lambda i: f"trajectory {i // per}, window ending at state {i % per + k - 1}",
        extra=extra,
        **common,
    )


def _attributes(source: Source, name: str) -> dict[str, Any]:
    fields = {f.name: {**f.source, "description": f.description} for f in (*source.inputs, *source.outputs)}
    notes = source.extra.get("notes")
    variables = {**fields, **({"_notes": notes} if notes else {})}
    attrs: dict[str, Any] = {
        "pde": name,
        "description": f"{name}: imported from the {source.format} file {source.path.name}",
        "schema_version": SCHEMA_VERSION,
        "pdeserve_version": version("pdeserve"),
        "input_fields": [f.name for f in source.inputs],
        "output_fields": [f.name for f in source.outputs],
        "n_samples": source.n_samples,
        "spatial_dims": list(source.dims),
        "boundary": source.boundary,
        "grid": "the source file's",
        "boundary_conditions": source.boundary_conditions,
        "scheme": "none: data imported from another code",
        "solver": "none",
        "parameters_json": json.dumps(_scalars(source.parameters), sort_keys=True),
        "source_format": source.format,
        "source_file": source.path.name,
        "source_variables": json.dumps(variables, sort_keys=True),
    }
    attrs.update({k: v for k, v in source.extra.items() if k != "notes"})
    return attrs


def _check_finite(source: Source, start: int, data: Mapping[str, np.ndarray]) -> None:
    first: tuple[int, str] | None = None
    for name, values in data.items():
        bad = ~np.isfinite(values.reshape(len(values), -1)).all(axis=1)
        if bad.any() and (first is None or int(np.argmax(bad)) < first[0]):
            first = (int(np.argmax(bad)), name)
    if first is not None:
        sample = start + first[0]
        raise ValueError(
            f"field {first[1]!r} holds NaN or Inf values at sample {sample} ({source.locate(sample)}); "
            "pdeserve imports finite data only"
        )


def write_import(
    source: Source,
    out: str | os.PathLike,
    name: str,
    *,
    overwrite: bool = False,
    chunk_size: int = 32,
    progress: bool = True,
) -> Path:
    """Write ``source`` as the pdeserve dataset ``out`` (family name ``name``), ``chunk_size`` samples at a
    time; ``ValueError`` (and no output file) on the first sample holding NaN or Inf."""
    import h5netcdf
    from tqdm import tqdm

    out = Path(out)
    check_name(name)
    if chunk_size < 1:
        raise ValueError(f"--chunk-size must be at least 1, got {chunk_size}")
    if out.resolve() == source.path.resolve():
        raise ValueError(f"--out {out} is the source file itself")
    out.parent.mkdir(parents=True, exist_ok=True)
    attrs = {**_attributes(source, name), "source_sha256": sha256_of(source.path)}
    with _exclusive(out):
        if out.exists() and not overwrite:
            raise FileExistsError(f"{out} already exists; pass --overwrite to replace it")
        partial = out.with_name(out.name + ".partial")
        try:
            with h5netcdf.File(partial, "w") as f:
                grid = tuple(len(source.coordinates[d]) for d in source.dims)
                f.dimensions = {"sample": source.n_samples, **dict(zip(source.dims, grid, strict=True))}
                f.attrs.update(attrs)
                for dim in source.dims:
                    var = f.create_variable(dim, (dim,), data=source.coordinates[dim])
                    var.attrs["long_name"] = f"{dim} coordinate"
                f.create_variable("sample", ("sample",), data=np.arange(source.n_samples, dtype="i8"))
                for item in (*source.inputs, *source.outputs):
                    var = f.create_variable(
                        item.name,
                        ("sample", *source.dims),
                        dtype=item.dtype,
                        chunks=(1, *grid),
                        compression="gzip",
                        compression_opts=4,
                        shuffle=True,
                    )
                    var.attrs["long_name"] = item.description
                with tqdm(total=source.n_samples, desc=name, unit="sample", disable=not progress) as bar:
                    for start, data in source.blocks(chunk_size):
                        _check_finite(source, start, data)
                        count = len(next(iter(data.values())))
                        for key, values in data.items():
                            f.variables[key][start : start + count] = values
                        bar.update(count)
            publish_file(partial, out)
        finally:
            partial.unlink(missing_ok=True)
    return out
