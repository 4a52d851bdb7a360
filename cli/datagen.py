"""``pdeserve datagen`` (also installed as ``datagen``): generate, list and inspect datasets, and retrain."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from pdeserve.cli.parsing import Commands
from pdeserve.cli.retrain import add_retrain_command

if TYPE_CHECKING:
    from pdeserve.datagen.dataset import LoadedDataset

EXAMPLES = """examples:
  pdeserve datagen list
  pdeserve datagen darcy --n 1000 --resolution 64 --out data/darcy64.h5 --seed 0
  pdeserve datagen darcy --n 1000 --resolution 85 --solve-resolution 421 --out darcy85.h5 --workers 2
  pdeserve datagen inspect data/darcy64.h5 --plot darcy64.png
"""


# datagen's own subcommands: a family of one of these names gets no generation command.
RESERVED = frozenset({"list", "inspect", "import", "retrain"})


def add_datagen_commands(parser: argparse.ArgumentParser) -> None:
    """Fill ``parser`` (``pdeserve datagen`` or the ``datagen`` script) with ``list``, ``inspect``, one
    subcommand per installed PDE family (built-in or a plugin's), and ``retrain``."""
    from pdeserve.datagen.families import families

    commands = Commands(parser, dest="datagen_command")
    commands.add("list", help="list the PDE families and their options").set_defaults(func=_list)
    inspect = commands.add(
        "inspect", help="print a dataset's shapes, value ranges and attributes; optionally plot samples"
    )
    inspect.add_argument("file", help="a pdeserve HDF5 dataset")
    inspect.add_argument("--plot", metavar="PNG", help="write a preview of the first samples to this PNG")
    inspect.add_argument("--samples", type=int, default=3, help="samples in the preview")
    inspect.set_defaults(func=_inspect)
    _add_import(commands)
    for family in families().values():
        if family.name in RESERVED or family.sample is None:
            continue  # listed by `datagen list`, which says why it has no command
        generate = commands.add(
            family.name, help=family.description, description=family.description, epilog=EXAMPLES
        )
        generate.add_argument("--n", type=int, required=True, help="number of samples")
        generate.add_argument(
            "--resolution", type=int, required=True, help="grid nodes per side of the stored fields"
        )
        generate.add_argument("--out", required=True, help="output HDF5 file")
        generate.add_argument("--seed", type=int, default=0, help="root random seed")
        generate.add_argument("--workers", type=int, default=1, help="solver processes (or Ray workers)")
        generate.add_argument(
            "--ray-address",
            help="fan out over Ray: 'auto' or HOST:PORT joins a cluster, 'local' starts Ray here",
        )
        generate.add_argument(
            "--chunk-size", type=int, default=32, help="samples per write (and resume point)"
        )
        generate.add_argument(
            "--dtype", choices=("float32", "float64"), default="float32", help="storage dtype"
        )
        generate.add_argument("--overwrite", action="store_true", help="replace an existing output file")
        generate.add_argument("--quiet", action="store_true", help="no progress bar")
        family.add_options(generate)
        generate.set_defaults(func=_generate, family=family.name)
    add_retrain_command(commands)


IMPORT_EXAMPLES = """examples:
  pdeserve datagen import pdebench 2D_DarcyFlow_beta1.0_Train.hdf5 --out darcy-beta1.h5 --name pdebench-darcy
  pdeserve datagen import auto 1D_Burgers_Sols_Nu0.001.hdf5 --out burgers.h5 --input-steps 2
  pdeserve datagen import the-well shear_flow_Reynolds_1e4.hdf5 --out shear.h5 --name shear-flow
  pdeserve datagen import fno-mat piececonst_r421_N1024_smooth1.mat --out fno-darcy.h5 --name fno-darcy
  pdeserve datagen import fno-mat ns_V1e-3_N5000_T50.mat --out ns.h5 --name fno-ns --input-steps 10
  pdeserve datagen import neuraloperator-pt darcy_train_16.pt --out darcy16.h5 --name no-darcy16
  pdeserve datagen import xarray sim.nc --inputs k --outputs p --sample-dim run --out sim.h5 --name my-sim
  pdeserve train --data darcy-beta1.h5 --model fno --repo models --name pdebench-darcy-fno
"""


def _add_import(commands: Commands) -> None:
    from pdeserve.datagen.importers import FORMATS

    command = commands.add(
        "import",
        help="convert a file another code wrote (The Well, PDEBench, FNO .mat, neuraloperator .pt, xarray)",
        description="Convert a dataset file in a format the field uses into a pdeserve dataset, streaming "
        "it in chunks of samples, and record the source's format, sha256, variables and file name. Time "
        "series become windows: the states at steps t-K+1..t (inputs u@t-1, u@t, ...) map to the state at "
        "t+1 (output u@t+1). The imported dataset has no sampler or solver of its own: models trained on it "
        "are checked against its data only.",
        epilog=IMPORT_EXAMPLES,
    )
    command.add_argument(
        "format", choices=("auto", *FORMATS), help="the source's format (auto: from the file)"
    )
    command.add_argument("source", help="the file to import")
    command.add_argument("--out", required=True, help="output HDF5 file")
    command.add_argument(
        "--name", help="dataset (family) name recorded as its pde, e.g. pdebench-darcy (default: from SOURCE)"
    )
    command.add_argument(
        "--inputs",
        type=_names,
        metavar="VAR[=FIELD],...",
        help="source variables that become inputs (xarray: required; others: instead of the format's own)",
    )
    command.add_argument("--outputs", type=_names, metavar="VAR[=FIELD],...", help="as --inputs, for outputs")
    command.add_argument(
        "--input-steps", type=int, default=1, help="time series: states in each input window"
    )
    command.add_argument("--sample-dim", default="sample", help="xarray: the dimension that indexes samples")
    command.add_argument(
        "--boundary",
        choices=("periodic", "dirichlet", "neumann"),
        help="boundary kind, instead of what the file says (non-periodic sources default to dirichlet)",
    )
    command.add_argument("--chunk-size", type=int, default=32, help="samples read and written at a time")
    command.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    command.add_argument("--quiet", action="store_true", help="no progress bar")
    command.set_defaults(func=_import)


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated variable names, got {text!r}")
    return names


def _import(args: argparse.Namespace) -> None:
    import h5netcdf
    import numpy as np

    from pdeserve.datagen.importers import ImportOptions, import_file

    options = ImportOptions(args.inputs, args.outputs, args.input_steps, args.sample_dim, args.boundary)
    path = import_file(
        args.format,
        args.source,
        args.out,
        args.name,
        options,
        overwrite=args.overwrite,
        chunk_size=args.chunk_size,
        progress=not args.quiet,
    )
    with h5netcdf.File(path, "r") as f:
        attrs = {k: f.attrs[k] for k in ("pde", "n_samples", "input_fields", "output_fields")}
    print(
        f"wrote {attrs['n_samples']} {attrs['pde']} samples from {Path(args.source).name} to {path} "
        f"(inputs {', '.join(np.atleast_1d(attrs['input_fields']))}; "
        f"outputs {', '.join(np.atleast_1d(attrs['output_fields']))})"
    )


def _list(args: argparse.Namespace) -> None:
    from pdeserve.datagen.families import registry

    found = registry()
    for family in found.families.values():
        origin = f"{family.origin.distribution} {family.origin.version}" if family.origin else "?"
        print(f"{family.name}: {family.description} [from {origin}]")
        if family.name in RESERVED:
            print(f"  (no `datagen {family.name}` command: the name is one of datagen's own commands)")
        elif family.sample is None:
            print("  (no sampler: the family cannot generate data)")
        print(
            f"  inputs: {', '.join(f.name for f in family.inputs)}; "
            f"outputs: {', '.join(f.name for f in family.outputs)}"
        )
        for name, text in family.option_help.items():
            print(f"  --{name.replace('_', '-')}: {text}")
    for broken in found.broken:
        print(
            f"{broken.name}: NOT LOADED [from {broken.origin.distribution} {broken.origin.version}]: "
            f"{broken.error}"
        )


def _inspect(args: argparse.Namespace) -> None:
    from pdeserve.datagen.dataset import load_dataset

    data = load_dataset(args.file)
    for name, array in {**data.inputs, **data.outputs}.items():
        kind = "input" if name in data.inputs else "output"
        print(
            f"{name} ({kind}): shape {array.shape}, dtype {array.dtype}, "
            f"min {array.min():.4g}, max {array.max():.4g}"
        )
    for key, value in data.attrs.items():
        if key != "generation_key":
            print(f"{key}: {json.dumps(value.tolist() if hasattr(value, 'tolist') else value)}")
    if args.plot:
        print(f"preview of {_plot_samples(data, args.plot, args.samples)} samples written to {args.plot}")


def _plot_samples(data: LoadedDataset, path: str, samples: int) -> int:
    """Plot the first ``samples`` samples, one row each (the last time step of a trajectory)."""
    from pdeserve.datagen.plots import save_panels

    if samples < 1:
        raise ValueError(f"--samples must be at least 1, got {samples}")
    fields = {**data.inputs, **data.outputs}
    dims = {f.name: f.dims for f in (*data.family.inputs, *data.family.outputs)}
    count = min(samples, len(next(iter(fields.values()))))
    rows = []
    for i in range(count):
        row = []
        for name, values in fields.items():
            field, label = values[i], f"{name} #{i}"
            if dims[name][0] == "t":
                field, label = field[-1], f"{name} #{i}, last t"
            row.append((label, field))
        rows.append(row)
    save_panels(rows, path, title=f"{data.family.name}: {Path(path).stem}")
    return count


def _generate(args: argparse.Namespace) -> None:
    import dataclasses

    from pdeserve.datagen.dataset import GenerationRequest, write_dataset
    from pdeserve.datagen.families import get_family

    family = get_family(args.family)
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(family.parameters)}
    request = GenerationRequest(
        family, family.parameters_from(values), args.n, args.resolution, args.seed, args.dtype
    )
    path = write_dataset(
        request,
        args.out,
        overwrite=args.overwrite,
        workers=args.workers,
        ray_address=args.ray_address,
        chunk_size=args.chunk_size,
        progress=not args.quiet,
    )
    print(f"wrote {args.n} {family.name} samples at {args.resolution} to {path}")
