"""The model card: everything a published version records besides its weights, as one typed value.

A version's ``config.json`` holds its card (``schema_version`` 2): architecture and arguments, fields,
normaliser statistics, PDE and parameters, training grid, dataset summary, training settings and
history, weights checksum, parameter count, metrics and lineage (each dataset with its generation recipe
when recorded; cards written before recipes were decode with none). Only the model repository reads and
writes the file (``operators/repository.py``); everything else works with :class:`ModelCard`.

Versions written before the card (``format_version`` 1: ``config.json`` plus ``metrics.json``, like
the bundled ``models/darcy-fno/1``) are read through :func:`card_from_legacy`. This module imports
neither torch nor numpy, so the CLI and the light client can use it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pdeserve.operators.errors import CheckpointError
from pdeserve.operators.settings import TrainingSettings

SCHEMA_VERSION = 2
LEGACY_FORMAT_VERSION = 1


@dataclass(frozen=True)
class FieldSpec:
    """One input or output channel of a model.

    Parameters
    ----------
    name : str
        The name requests and responses use (``a``, ``u``, ``w@t=3``).
    description : str
        What the field is, for ``GetModel`` and ``--help``.
    """

    name: str
    description: str


@dataclass(frozen=True)
class ChannelStats:
    """Per-channel mean and standard deviation of a normaliser, fitted on the training split."""

    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclass(frozen=True)
class Normalizers:
    """The input and output normalisers' statistics."""

    inputs: ChannelStats
    outputs: ChannelStats


@dataclass(frozen=True)
class DatasetSummary:
    """The data a model was fitted on, as one stacked dataset.

    Parameters
    ----------
    fingerprint : str
        ``LoadedDataset.fingerprint()`` of the (combined) training data.
    n_samples, n_train, n_validation, n_test : int
        Operator pairs in all and in each split.
    """

    fingerprint: str
    n_samples: int
    n_train: int
    n_test: int
    n_validation: int = 0


@dataclass(frozen=True)
class TimeMap:
    """Which states of a trajectory dataset are operator inputs and which are outputs.

    Parameters
    ----------
    input_steps : int
        States at the start of the sequence given to the operator (1: only the initial state).
    output_steps : int or None
        States right after them that the operator predicts (None: all the remaining ones).
    """

    input_steps: int = 1
    output_steps: int | None = None

    def __post_init__(self) -> None:
        if self.input_steps < 1 or (self.output_steps is not None and self.output_steps < 1):
            raise ValueError(
                f"input and output steps must be at least 1, got {self.input_steps} and {self.output_steps}"
            )


@dataclass(frozen=True)
class Weights:
    """The weights file of a version (a bare file name in the version's folder) and its sha256."""

    file: str
    sha256: str

    def __post_init__(self) -> None:
        # A card is data from disk: a path in it must not reach files outside the version's folder.
        if self.file in ("", ".", "..") or any(c in self.file for c in "/\\\0"):
            raise ValueError(f"the weights file {self.file[:40]!r} is not a bare file name")


@dataclass(frozen=True)
class EpochRecord:
    """One finished training epoch.

    Parameters
    ----------
    epoch : int
        1-based epoch number.
    train_loss : float
        Mean training loss over the epoch.
    learning_rate : float
        Learning rate at the end of the epoch.
    seconds : float
        Wall time of the epoch.
    val_relative_l2 : float or None
        Validation error, when there is a validation split.
    """

    epoch: int
    train_loss: float
    learning_rate: float
    seconds: float
    val_relative_l2: float | None = None


@dataclass(frozen=True)
class GenerationRecipe:
    """How a dataset was generated: enough to run ``pdeserve datagen`` again and get the same arrays.

    Parameters
    ----------
    family : str
        The PDE family (``datagen`` registry name).
    parameters : mapping
        The family's parameters as generated, every ``datagen`` option that affects the data included,
        with ``solve_resolution`` resolved (the file's ``parameters_json``).
    seed : int
        Root seed (sample ``i`` is drawn from ``SeedSequence([seed, i])``).
    n : int
        Number of samples.
    resolution : int
        Nodes per side of the stored fields.
    dtype : str
        Storage dtype (``float32`` or ``float64``).
    pdeserve_version : str
        The pdeserve that generated it: a different solver may produce different bits.
    """

    family: str
    parameters: Mapping[str, Any]
    seed: int
    n: int
    resolution: int
    dtype: str
    pdeserve_version: str

    @property
    def solve_resolution(self) -> int | None:
        """Nodes per side of the solver grid (None for a family without one)."""
        return self.parameters.get("solve_resolution")


@dataclass(frozen=True)
class DatasetRecord:
    """A dataset in a model's lineage.

    Parameters
    ----------
    path : str
        The HDF5 file: relative to the model repository when inside it, absolute otherwise.
    fingerprint : str
        ``LoadedDataset.fingerprint()`` of its content.
    n_train, n_validation, n_test : int
        How its samples were split, in this order (the test samples are the held-out set).
    seed : int or None
        The root seed it was generated with, when recorded.
    recipe : GenerationRecipe or None
        How to generate it again (None: recorded before recipes were, or not from ``pdeserve datagen``).
    """

    path: str
    fingerprint: str
    n_train: int
    n_validation: int
    n_test: int
    seed: int | None = None
    recipe: GenerationRecipe | None = None

    @property
    def n_samples(self) -> int:
        return self.n_train + self.n_validation + self.n_test

    def parts(self) -> tuple[slice, slice, slice]:
        """Train, validation and test slices of the file's samples."""
        a, b = self.n_train, self.n_train + self.n_validation
        return slice(0, a), slice(a, b), slice(b, self.n_samples)


@dataclass(frozen=True)
class HeldOut:
    """Parent and candidate of a retrain on one dataset's held-out samples.

    Parameters
    ----------
    path, fingerprint : str
        The dataset (as in the lineage).
    n_samples : int
        Held-out samples.
    parent, candidate : float
        Mean relative L2 of each model on them.
    new : bool
        The set of the newly generated data (reported, not gated).
    """

    path: str
    fingerprint: str
    n_samples: int
    parent: float
    candidate: float
    new: bool

    @property
    def change(self) -> float:
        """Relative change of the error, ``(candidate - parent) / parent`` (positive = worse)."""
        if self.parent > 0:
            return (self.candidate - self.parent) / self.parent
        return 0.0 if self.candidate == 0 else math.inf

    def regressed(self, max_regression: float) -> bool:
        """Whether this set refuses the candidate: a non-finite candidate error on any set (NaN never
        compares greater, so it must be caught before the comparison), or on an old set a change
        above ``max_regression``."""
        if not math.isfinite(self.candidate):
            return True
        return not self.new and self.change > max_regression


@dataclass(frozen=True)
class Gate:
    """The regression gate a retrained version passed: the bound and both errors per held-out set."""

    max_regression: float
    held_out: tuple[HeldOut, ...]


@dataclass(frozen=True)
class Lineage:
    """How a version came about.

    Parameters
    ----------
    mode : str
        ``train``, ``fine-tune``, ``from-scratch`` or ``rollback``.
    datasets : tuple of DatasetRecord
        Every file the weights were fit on.
    command : tuple of str
        The command line that published the version.
    parent : str or None
        The version a retrain started from.
    parent_weights_sha256 : str or None
        That version's weights checksum.
    gate : Gate or None
        The regression gate of a retrain.
    rollback_of, replaces : str or None
        For a rollback: the version whose files it republishes, and the newest version it replaced.
    published_at : str or None
        ISO time of a rollback's publication.
    """

    mode: str
    datasets: tuple[DatasetRecord, ...] = ()
    command: tuple[str, ...] = ()
    parent: str | None = None
    parent_weights_sha256: str | None = None
    gate: Gate | None = None
    rollback_of: str | None = None
    replaces: str | None = None
    published_at: str | None = None


@dataclass(frozen=True)
class SideError:
    """A model's error on fresh samples solved classically on a grid of one side.

    Parameters
    ----------
    side : int
        Grid points per side.
    relative_l2 : float
        Mean relative L2 error against the classical solution on that grid.
    n_samples : int
        Samples it was measured on.
    """

    side: int
    relative_l2: float
    n_samples: int


@dataclass(frozen=True)
class ResolutionValidation:
    """The error across a sweep of grid sides, measured at publish time.

    Parameters
    ----------
    training_side : int
        The side the model was trained on (its error is the yardstick).
    sides : tuple of SideError
        Every side measured, in increasing order.
    max_factor : float
        A side is validated when its error is at most this times the training side's.
    """

    training_side: int
    sides: tuple[SideError, ...]
    max_factor: float

    def validated_range(self) -> tuple[int, int]:
        """The widest interval of sides around the training side in which every measured side is
        validated; requests on a grid inside it are served as validated."""
        ordered = sorted(self.sides, key=lambda s: s.side)
        limit = self.max_factor * next(s.relative_l2 for s in ordered if s.side == self.training_side)
        start = stop = next(i for i, s in enumerate(ordered) if s.side == self.training_side)
        while start > 0 and ordered[start - 1].relative_l2 <= limit:
            start -= 1
        while stop < len(ordered) - 1 and ordered[stop + 1].relative_l2 <= limit:
            stop += 1
        return ordered[start].side, ordered[stop].side


@dataclass(frozen=True)
class ErrorCalibration:
    """How an answer's a-posteriori indicator becomes an error estimate (split-conformal).

    Parameters
    ----------
    indicator : str
        The PDE family's indicator it calibrates (``datagen/indicators.py``).
    coverage : float
        Stated probability that the true relative L2 error is at most the estimate (e.g. 0.9).
    scale : float
        The estimate is ``scale * indicator``: the conformal quantile of ``error / indicator`` over the
        calibration samples.
    n_samples : int
        Held-out samples (for a rollout calibration, trajectories) it was calibrated on.
    steps : int
        Forward passes it holds for: 1 for one pass from exact inputs; for a rollout calibration, the
        horizon in passes, each pass's coverage at least ``coverage`` up to it.
    """

    indicator: str
    coverage: float
    scale: float
    n_samples: int
    steps: int = 1


# The paths of a ledger entry: the surrogate's forward pass (with its estimate), a rung of the family's
# classical ladder, the family's reference solve.
SURROGATE_PATH, RUNG_PATH, REFERENCE_PATH = "surrogate", "rung", "reference"


@dataclass(frozen=True)
class LedgerEntry:
    """One way of answering, measured on fresh samples of the model's distribution.

    Parameters
    ----------
    path : str
        ``surrogate``, ``rung`` or ``reference``.
    rung : str
        The rung's label (``"direct LDL^T, grid 33"``); ``""`` for the surrogate and the reference.
    settings : mapping
        The rung's settings, as JSON values (empty for the other paths).
    error_quantile : float
        The ledger's ``coverage`` quantile of the relative L2 error against the family's reference solved
        its ``reference_refinement`` times as finely where its parameters allow (the conformal quantile:
        the ``ceil((n + 1) coverage)``-th smallest of ``n``).
    mean_error : float
        Mean relative L2 error.
    seconds : float
        Wall time of a one-sample call, the median over the samples (the surrogate's includes its
        estimate).
    """

    path: str
    rung: str
    settings: Mapping[str, Any]
    error_quantile: float
    mean_error: float
    seconds: float


@dataclass(frozen=True)
class Ledger:
    """What each way of answering costs and how accurate it is, at the training grid (the router's table,
    ``serving/router.py``).

    Parameters
    ----------
    side : int
        Grid side it was measured at (the training side).
    coverage : float
        The quantile of ``LedgerEntry.error_quantile``.
    n_samples : int
        Fresh samples each path answered.
    entries : tuple of LedgerEntry
        The surrogate, every rung on a solve grid no finer than ``side``, and the reference.
    """

    side: int
    coverage: float
    n_samples: int
    entries: tuple[LedgerEntry, ...]


@dataclass(frozen=True)
class SolverFreeCalibration:
    """An error estimate that needs no solver: the input's distance from the training inputs, scaled
    split-conformally on held-out pairs (``operators/solver_free_estimate.py``).

    Parameters
    ----------
    indicator : str
        The difficulty function it scales (``input-distance``).
    coverage : float
        Stated probability that the true relative L2 error is at most the estimate.
    scale : float
        The estimate is ``scale * indicator``: the conformal quantile of ``error / indicator`` over the
        ``n_samples`` calibration pairs.
    n_samples : int
        Held-out pairs it was calibrated on.
    measured_coverage : float
        Fraction of ``n_test`` other held-out pairs whose error was at most their estimate.
    n_test : int
        Held-out pairs the coverage was measured on (none of them calibrated it).
    statistics : Weights
        The safetensors file in the version's folder (and its sha256) holding the training inputs'
        principal directions and projections.
    coarse_side : int
        Grid side each input channel is averaged to before projection.
    neighbours : int
        Nearest training inputs whose mean distance the indicator takes.
    floor : float
        Added to every indicator (a fraction of the training inputs' typical neighbour distance), so
        that an input equal to a training input still gets a positive estimate.
    distance_limit : float
        Inputs whose distance is above it (the calibration pairs' 99th percentile) are flagged.
    band : tuple of int
        Wavenumbers (cycles per domain, lowest and highest) whose share of an input channel's energy
        is compared with ``band_limits``.
    band_limits : tuple of float
        Per input channel, the training inputs' 99th percentile of that share (above it: flagged).
    """

    indicator: str
    coverage: float
    scale: float
    n_samples: int
    measured_coverage: float
    n_test: int
    statistics: Weights
    coarse_side: int
    neighbours: int
    floor: float
    distance_limit: float
    band: tuple[int, ...]
    band_limits: tuple[float, ...]


@dataclass(frozen=True)
class FamilySource:
    """Where a model's PDE family comes from, so that a server can say what it lacks.

    Parameters
    ----------
    distribution, version : str or None
        The Python distribution that registers the family (``pdeserve`` for the built-ins) and its
        version when the model was trained; None for a family known only from imported data, which has
        no solver.
    data_format : str or None
        For imported data: the format it was imported from (``datagen import``).
    """

    distribution: str | None
    version: str | None
    data_format: str | None = None

    @property
    def has_solver(self) -> bool:
        return self.distribution is not None


@dataclass(frozen=True)
class ValueRange:
    """The range of one input field over the training samples (answers outside it are flagged)."""

    name: str
    low: float
    high: float


@dataclass(frozen=True)
class ModelCard:
    """What a published version records besides its weights (``config.json``).

    Parameters
    ----------
    architecture : str
        Registry name (``fno``, ``tfno``, ``mgno``, ``galerkin``).
    arguments : mapping
        The architecture config's arguments (JSON values), enough to rebuild the network.
    pde : str
        The PDE family (``datagen`` registry name).
    pde_parameters : mapping
        The family's parameters the data were generated with.
    dims : tuple of str
        Grid dimension names (``("x", "y")``).
    inputs, outputs : tuple of FieldSpec
        The channels, in order.
    training_resolution : tuple of int
        The grid the model was trained on.
    normalizers : Normalizers
        Input and output normaliser statistics.
    dataset : DatasetSummary
        The (combined) training data.
    training : TrainingSettings
        The optimisation settings.
    pdeserve_version : str
        The pdeserve that trained it.
    created_at : str
        ISO time of training.
    time_map : TimeMap or None
        Input and output steps of a time-dependent model; None for a steady one.
    weights : Weights or None
        The weights file and checksum (set when the version is written).
    parameter_count : int
        Real parameters of the network (a complex one counts twice).
    metrics : mapping of str to float
        Training and evaluation metrics.
    history : tuple of EpochRecord
        The training epochs.
    lineage : Lineage or None
        How the version came about (None: published before lineage was recorded).
    validation : ResolutionValidation or None
        Errors across grid sides, measured at publish time (None: not measured).
    calibration : ErrorCalibration or None
        How the served error estimate is computed (None: no estimate).
    rollout_calibration : ErrorCalibration or None
        How a rollout's estimate is computed after its first pass, up to its ``steps`` (None: the
        indicator alone after the first pass).
    input_ranges : tuple of ValueRange
        Each input field's range over the training samples.
    family : FamilySource or None
        The distribution that registers the PDE family (None: a card written before it was recorded,
        whose family is one of pdeserve's own).
    solver_free : SolverFreeCalibration or None
        An error estimate that needs no solver (None: not calibrated); served when the family's own
        estimate cannot be.
    ledger : Ledger or None
        Error and cost of the surrogate, of every ladder rung and of the reference (None: not measured).
    """

    architecture: str
    arguments: Mapping[str, Any]
    pde: str
    pde_parameters: Mapping[str, Any]
    dims: tuple[str, ...]
    inputs: tuple[FieldSpec, ...]
    outputs: tuple[FieldSpec, ...]
    training_resolution: tuple[int, ...]
    normalizers: Normalizers
    dataset: DatasetSummary
    training: TrainingSettings
    pdeserve_version: str
    created_at: str
    time_map: TimeMap | None = None
    weights: Weights | None = None
    parameter_count: int = 0
    metrics: Mapping[str, float] = field(default_factory=dict)
    history: tuple[EpochRecord, ...] = ()
    lineage: Lineage | None = None
    validation: ResolutionValidation | None = None
    calibration: ErrorCalibration | None = None
    rollout_calibration: ErrorCalibration | None = None
    input_ranges: tuple[ValueRange, ...] = ()
    family: FamilySource | None = None
    solver_free: SolverFreeCalibration | None = None
    ledger: Ledger | None = None

    @property
    def input_names(self) -> list[str]:
        return [f.name for f in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [f.name for f in self.outputs]

    @property
    def ndim(self) -> int:
        return len(self.dims)

    def replace(self, **changes: Any) -> ModelCard:
        """A copy with ``changes`` (the card is immutable)."""
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        """The card as JSON text (``schema_version`` first)."""
        body = {"schema_version": SCHEMA_VERSION, **dataclasses.asdict(self)}
        # Written only when set (fields added within schema 2): readers that predate them still read
        # every card that does not use them.
        for optional in ("rollout_calibration", "family", "solver_free", "ledger"):
            if body[optional] is None:
                del body[optional]
        for calibration in (body.get("calibration"), body.get("rollout_calibration")):
            if calibration is not None and calibration["steps"] == 1:
                del calibration["steps"]
        return json.dumps(body, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = "config.json") -> ModelCard:
        """Parse a card; ``CheckpointError`` naming ``source`` for bad JSON, an unknown schema version
        or fields that do not fit."""
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{source} is not valid JSON: {exc}") from None
        if not isinstance(document, dict):
            raise CheckpointError(f"{source} does not hold a model card (a JSON object)")
        schema = document.pop("schema_version", None)
        if schema != SCHEMA_VERSION:
            raise CheckpointError(
                f"{source} has schema_version {schema!r}; this pdeserve reads model cards of "
                f"schema_version {SCHEMA_VERSION} (and format_version {LEGACY_FORMAT_VERSION})"
            )
        return decode(cls, document, source)


def card_from_legacy(config: Mapping[str, Any], metrics: Mapping[str, float], source: str) -> ModelCard:
    """The card of a version written before cards (``format_version`` 1): its ``config.json`` and
    ``metrics.json``. The parameter count, which it did not record, is left 0 for the caller."""
    document = {k: v for k, v in config.items() if k != "format_version"}
    document["metrics"] = dict(metrics)
    return decode(ModelCard, document, source)


def decode(kind: Any, value: Any, where: str) -> Any:
    """``value`` (parsed JSON) as the annotated type ``kind``: dataclasses from objects (missing keys
    are errors; keys it does not declare are ignored, so that a reader of schema 2 reads a card that a
    newer writer of schema 2 extended), tuples from lists, ``X | None``; ``CheckpointError`` naming
    ``where``."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        (inner,) = [o for o in options if o is not type(None)]
        return decode(inner, value, where)
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise CheckpointError(f"{where}: expected an object, got {type(value).__name__}")
        hints = typing.get_type_hints(kind)
        declared = {f.name: f for f in dataclasses.fields(kind)}
        missing = sorted(
            n
            for n, f in declared.items()
            if n not in value
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        )
        if missing:
            raise CheckpointError(f"{where}: missing fields {missing}")
        arguments = {k: decode(hints[k], v, f"{where}.{k}") for k, v in value.items() if k in declared}
        try:
            return kind(**arguments)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{where}: {exc}") from None
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise CheckpointError(f"{where}: expected a list, got {type(value).__name__}")
        (item, _) = typing.get_args(kind)
        return tuple(decode(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is not None and issubclass(origin, Mapping):
        if not isinstance(value, dict):
            raise CheckpointError(f"{where}: expected an object, got {type(value).__name__}")
        return value
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind in (int, str, bool) and (
        not isinstance(value, kind) or (kind is int and isinstance(value, bool))
    ):
        raise CheckpointError(f"{where}: expected {kind.__name__}, got {str(value)[:40]!r}")
    return value
