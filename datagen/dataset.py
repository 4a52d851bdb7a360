"""HDF5 datasets: a resumable writer and the reader every other layer uses.

One file per dataset, netCDF-4 compatible (written through h5netcdf on top of h5py) so that
``xarray.open_dataset(path, engine="h5netcdf")`` sees named dimensions ``sample, x, y`` with coordinate
variables. Root attributes record the PDE, every parameter needed to regenerate the data, the seed,
the schema and pdeserve versions, and which variables are inputs and outputs.

Writing goes to ``<out>.partial`` chunk by chunk; a killed run started again with the same command
continues after the last finished chunk, and the file appears under its final name only when complete
(flushed to disk first). A run holds ``<out>.lock`` while it works: a second run with the same output
fails at once with :class:`OutputLockedError` instead of writing into the first one's partial file.
Sample ``i`` is drawn from ``SeedSequence([seed, i])``, so the data do not depend on chunking or workers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import json
import multiprocessing
import os
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import h5netcdf
import numpy as np

from pdeserve.datagen.families import FieldInfo, PdeFamily, get_family

SCHEMA_VERSION = 1
_GENERATION_KEY = "generation_key"


@dataclass(frozen=True)
class GenerationRequest:
    """What to generate; equal requests produce byte-identical arrays.

    Parameters
    ----------
    family : PdeFamily
        The PDE family.
    parameters : dataclass instance
        The family's parameters.
    n : int
        Number of samples.
    resolution : int
        Nodes per spatial side of the stored fields.
    seed : int
        Root seed; sample ``i`` uses ``SeedSequence([seed, i])``.
    dtype : str
        Storage dtype of the fields, ``"float32"`` or ``"float64"``.
    """

    family: PdeFamily
    parameters: Any
    n: int
    resolution: int
    seed: int = 0
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"--n must be at least 1, got {self.n}")
        if self.seed < 0:
            raise ValueError(f"--seed must be non-negative, got {self.seed}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype}")
        # Validates the resolution, and records the parameters as actually used (e.g. the solver grid)
        # so that the file regenerates exactly.
        object.__setattr__(self, "parameters", self.parameters.for_resolution(self.resolution))

    def key(self) -> str:
        """A JSON string identifying the request (stored in the file to validate a resume)."""
        return json.dumps(
            {
                "pde": self.family.name,
                "parameters": self.parameters.as_dict(),
                "n": self.n,
                "resolution": self.resolution,
                "seed": self.seed,
                "dtype": self.dtype,
                "schema_version": SCHEMA_VERSION,
            },
            sort_keys=True,
        )

    def attributes(self) -> dict[str, Any]:
        """Root attributes of the file."""
        attrs: dict[str, Any] = {
            "pde": self.family.name,
            "description": self.family.description,
            "schema_version": SCHEMA_VERSION,
            "pdeserve_version": version("pdeserve"),
            "input_fields": [f.name for f in self.family.inputs],
            "output_fields": [f.name for f in self.family.outputs],
            "seed": self.seed,
            "n_samples": self.n,
            "resolution": self.resolution,
            "grid": self.family.grid,
            "boundary_conditions": self.family.boundary_conditions,
            "scheme": self.family.scheme,
            "solver": self.family.solver,
            "parameters_json": json.dumps(self.parameters.as_dict(), sort_keys=True),
            _GENERATION_KEY: self.key(),
        }
        # netCDF attributes cannot be null: unset options live only in parameters_json.
        attrs.update({k: v for k, v in self.parameters.as_dict().items() if v is not None})
        return attrs


def _sample_chunk(request: GenerationRequest, indices: Sequence[int]) -> dict[str, np.ndarray]:
    rngs = [np.random.default_rng(np.random.SeedSequence([request.seed, int(i)])) for i in indices]
    fields = request.family.sample(request.parameters, request.resolution, rngs)
    return {k: v.astype(request.dtype) for k, v in fields.items()}


def _create(path: Path, request: GenerationRequest) -> None:
    coords = request.family.coordinates(request.parameters, request.resolution)
    with h5netcdf.File(path, "w") as f:
        f.dimensions = {"sample": None, **{d: len(c) for d, c in coords.items()}}
        f.attrs.update(request.attributes())
        f.attrs["samples_written"] = 0
        for d, values in coords.items():
            var = f.create_variable(d, (d,), data=values)
            var.attrs["long_name"] = "time" if d == "t" else f"{d} coordinate"
        f.create_variable("sample", ("sample",), dtype="i8")
        for field in (*request.family.inputs, *request.family.outputs):
            var = f.create_variable(
                field.name,
                ("sample", *field.dims),
                dtype=request.dtype,
                chunks=(1, *(len(coords[d]) for d in field.dims)),
                compression="gzip",
                compression_opts=4,
                shuffle=True,
            )
            var.attrs["long_name"] = field.description


def _resume_point(path: Path, request: GenerationRequest) -> int | None:
    """Samples already in a partial file of the same request, or None if it must start over."""
    try:
        with h5netcdf.File(path, "r") as f:
            if f.attrs.get(_GENERATION_KEY) != request.key():
                return None
            return int(f.attrs["samples_written"])
    except (OSError, KeyError, ValueError):
        return None  # a run killed mid-write may leave an unreadable file: regenerate


def _open_pool(workers: int, ray_address: str | None) -> tuple[Any, bool]:
    """A pool with ``starmap`` (Ray's multiprocessing-compatible pool, local processes, or None:
    inline) and whether this call connected to Ray (and so must disconnect when done)."""
    if ray_address:
        import ray
        from ray.util.multiprocessing import Pool as RayPool

        connected = not ray.is_initialized()
        if connected:
            # Workers only: no dashboard, and the driver is not flooded with worker logs.
            address = None if ray_address == "local" else ray_address
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        return RayPool(processes=workers), connected
    if workers > 1:
        # spawn, not fork: a forked child of a process that already ran torch's thread pools can hang.
        return multiprocessing.get_context("spawn").Pool(workers), False
    return None, False


class OutputLockedError(RuntimeError):
    """Another run is writing the same output file."""


@contextlib.contextmanager
def _exclusive(out: Path) -> Iterator[None]:
    """Hold ``<out>.lock`` (an ``flock``, released if the process dies) while writing ``out``; removed
    when done. HDF5 locks the partial file only while a chunk is written, so two runs would take turns
    writing into it."""
    lock = out.with_name(out.name + ".lock")
    while True:
        fd = os.open(lock, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputLockedError(
                f"another run is writing {out}; wait for it to finish or choose another --out"
            ) from None
        with contextlib.suppress(FileNotFoundError):
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                break
        os.close(fd)  # the holder before us removed the file we locked: lock the one now there
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)


def _chunks(start: int, n: int, size: int) -> Iterator[range]:
    for lo in range(start, n, size):
        yield range(lo, min(lo + size, n))


def write_dataset(
    request: GenerationRequest,
    out: str | os.PathLike,
    *,
    overwrite: bool = False,
    workers: int = 1,
    ray_address: str | None = None,
    chunk_size: int = 32,
    progress: bool = True,
) -> Path:
    """Generate ``request`` into ``out`` (HDF5), resuming a partial run of the same request.

    Parameters
    ----------
    request : GenerationRequest
        What to generate.
    out : path
        Final file name; data are written to ``<out>.partial`` and renamed when complete.
    overwrite : bool
        Replace an existing ``out``; without it an existing file is an error raised before any work.
    workers : int
        Processes solving samples in parallel (1 = in this process), or Ray workers with ``ray_address``.
    ray_address : str, optional
        Fan the samples out as Ray tasks: ``"auto"``/``HOST:PORT`` joins a cluster, ``"local"`` starts
        (or reuses) a Ray instance on this machine.
    chunk_size : int
        Samples written per flush; a resumed run restarts at a chunk boundary.
    progress : bool
        Show a progress bar.
    """
    out = Path(out)
    if workers < 1 or chunk_size < 1:
        raise ValueError(f"--workers and --chunk-size must be at least 1, got {workers} and {chunk_size}")
    out.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(out):
        if out.exists() and not overwrite:  # under the lock: a run that held it may have just made it
            raise FileExistsError(f"{out} already exists; pass --overwrite to replace it")
        partial = out.with_name(out.name + ".partial")
        _fill(request, partial, workers, ray_address, chunk_size, progress)
        publish_file(partial, out)
    return out


def publish_file(partial: Path, out: Path) -> None:
    """Flush the complete ``partial`` to disk and rename it to ``out`` (then flush the rename), so that
    ``out`` never names a half-written file."""
    with open(partial, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(partial, out)
    directory = os.open(out.parent, os.O_RDONLY)  # and the rename itself
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _fill(
    request: GenerationRequest,
    partial: Path,
    workers: int,
    ray_address: str | None,
    chunk_size: int,
    progress: bool,
) -> None:
    """Generate the samples ``partial`` does not hold yet (all of them unless it is a resumable partial
    file of ``request``); see :func:`write_dataset` for the parameters."""
    from tqdm import tqdm

    start = _resume_point(partial, request) if partial.exists() else None
    if start is None:
        _create(partial, request)
        start = 0
    else:
        print(f"resuming {partial} at sample {start} of {request.n}", file=sys.stderr)
    pool, connected = _open_pool(workers, ray_address)
    try:
        with tqdm(
            total=request.n, initial=start, desc=f"{request.family.name}", unit="sample", disable=not progress
        ) as bar:
            for chunk in _chunks(start, request.n, chunk_size):
                if pool is None:
                    data = _sample_chunk(request, chunk)
                else:
                    shares = [s.tolist() for s in np.array_split(np.asarray(chunk), workers) if len(s)]
                    parts = pool.starmap(_sample_chunk, [(request, share) for share in shares])
                    data = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
                with h5netcdf.File(partial, "a") as f:
                    f.resize_dimension("sample", chunk.stop)
                    f.variables["sample"][chunk.start : chunk.stop] = np.arange(chunk.start, chunk.stop)
                    for name, values in data.items():
                        f.variables[name][chunk.start : chunk.stop] = values
                    f.flush()
                    f.attrs["samples_written"] = chunk.stop  # only after the data are flushed
                bar.update(len(chunk))
    finally:
        if pool is not None:
            pool.terminate()
        if connected:  # leave the process as we found it (a later ray.init may need other options)
            import ray

            ray.shutdown()


@dataclass(frozen=True)
class LoadedDataset:
    """A dataset read into memory.

    Parameters
    ----------
    attrs : dict
        Root attributes (lists decoded to Python lists).
    inputs, outputs : dict of str to ndarray
        Fields of shape ``(sample, *grid)``, in the order of ``input_fields`` / ``output_fields``.
    """

    attrs: dict[str, Any]
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]

    @property
    def family(self) -> PdeFamily:
        """The file's PDE family: the registered one of its ``pde`` name, or for an imported file
        (one with ``source_format``) the data-only family its attributes describe."""
        if "source_format" in self.attrs:
            return data_only_family(self.attrs)
        return get_family(self.attrs["pde"])

    @property
    def parameters(self) -> Any:
        return self.family.parameters_from(json.loads(self.attrs["parameters_json"]))

    @property
    def n_samples(self) -> int:
        return next(iter(self.inputs.values())).shape[0]

    def fingerprint(self) -> str:
        """sha256 over the names, dtypes, shapes and bytes of every field: the data's content identity."""
        digest = hashlib.sha256()
        fields = {**self.inputs, **self.outputs}
        for name in sorted(fields):
            array = np.ascontiguousarray(fields[name])
            digest.update(f"{name}:{array.dtype.str}:{array.shape}".encode())
            digest.update(array.tobytes())
        return digest.hexdigest()


def _as_list(value: Any) -> list[str]:
    return [str(v) for v in np.atleast_1d(value)]


def data_only_family(attrs: Mapping[str, Any]) -> PdeFamily:
    """The family of an imported file (``pdeserve datagen import``), from its root attributes: its fields
    and dimensions, and a parameter dataclass holding the scalars recorded from the source; no sampler,
    no solver, no hooks, no origin. Every field is a steady map over ``spatial_dims`` (windows of a
    trajectory are separate channels), so operator pairs treat it as Darcy's. One object per distinct
    set of attributes, so that its parameters compare equal across reads."""
    return _data_only_family(
        str(attrs["pde"]),
        str(attrs.get("description", "")),
        tuple(_as_list(attrs["input_fields"])),
        tuple(_as_list(attrs["output_fields"])),
        tuple(_as_list(attrs["spatial_dims"])),
        str(attrs["boundary"]),
        str(attrs.get("boundary_conditions", "")),
        str(attrs["parameters_json"]),
        str(attrs.get("source_variables", "{}")),
    )


def _data_only_coordinates(parameters: Any, resolution: int) -> dict[str, np.ndarray]:
    raise ValueError(
        "a data-only family has no grid of its own: its coordinates are the variables of its file"
    )


@functools.lru_cache(maxsize=64)
def _data_only_family(
    name: str,
    description: str,
    inputs: tuple[str, ...],
    outputs: tuple[str, ...],
    dims: tuple[str, ...],
    boundary: str,
    boundary_conditions: str,
    parameters_json: str,
    source_variables: str,
) -> PdeFamily:
    values = json.loads(parameters_json)
    parameters = dataclasses.make_dataclass(
        "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]+", name)) + "Parameters",
        [(key, type(value), dataclasses.field(default=value)) for key, value in values.items()],
        frozen=True,
        namespace={"as_dict": lambda self: dataclasses.asdict(self)},
    )
    sources = json.loads(source_variables)

    def field(field_name: str) -> FieldInfo:
        text = sources.get(field_name, {}).get("description", f"{field_name}, imported")
        return FieldInfo(field_name, text, dims)

    return PdeFamily(
        name=name,
        description=description,
        dims=dims,
        inputs=tuple(field(n) for n in inputs),
        outputs=tuple(field(n) for n in outputs),
        boundary=boundary,  # type: ignore[arg-type]
        grid="the source file's",
        boundary_conditions=boundary_conditions,
        scheme="none: data imported from another code",
        solver="none",
        parameters=parameters,
        coordinates=_data_only_coordinates,
        sample=None,
        reference=None,
        option_help={},
    )


def load_dataset(path: str | os.PathLike) -> LoadedDataset:
    """Read a pdeserve HDF5 dataset; ``ValueError`` if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such dataset file: {path}")
    try:
        with h5netcdf.File(path, "r") as f:
            attrs = {k: f.attrs[k] for k in f.attrs}
            if "input_fields" not in attrs or "output_fields" not in attrs:
                raise ValueError(
                    f"{path} is not a pdeserve dataset (no input_fields/output_fields attributes)"
                )
            attrs["input_fields"] = _as_list(attrs["input_fields"])
            attrs["output_fields"] = _as_list(attrs["output_fields"])
            inputs = {k: f.variables[k][...] for k in attrs["input_fields"]}
            outputs = {k: f.variables[k][...] for k in attrs["output_fields"]}
    except OSError as exc:
        raise ValueError(f"{path} is not a readable HDF5 file: {exc}") from None
    return LoadedDataset(attrs, inputs, outputs)
