"""``ModelInfo``: a model version described from its card alone (no weights are read), with whether this
server has its classical solver and, if not, why (serving/family.py)."""

from __future__ import annotations

import json

from pdeserve.operators.card import FieldSpec, ModelCard
from pdeserve.operators.registry import make_config
from pdeserve.protos.v1 import solver_pb2 as pb
from pdeserve.serving.family import solver_unavailable_reason


def _field_specs(fields: tuple[FieldSpec, ...], shape: list[int]) -> list[pb.FieldSpec]:
    return [
        pb.FieldSpec(name=f.name, description=f.description, shape=shape, dtype=pb.DTYPE_FLOAT32)
        for f in fields
    ]


def model_info(name: str, version: str, card: ModelCard, versions: list[str]) -> pb.ModelInfo:
    """The ``ModelInfo`` message describing version ``version`` of model ``name`` from its card."""
    rule = make_config(card.architecture, card.arguments).resolutions()
    shape = list(card.training_resolution)
    info = pb.ModelInfo(
        name=name,
        version=version,
        versions=versions,
        architecture=card.architecture,
        pde=card.pde,
        pde_parameters_json=json.dumps(card.pde_parameters, sort_keys=True),
        inputs=_field_specs(card.inputs, shape),
        outputs=_field_specs(card.outputs, shape),
        min_resolution=rule.minimum,
        max_resolution=rule.maximum,
        resolution_multiple=rule.multiple,
        metrics={k: float(v) for k, v in card.metrics.items()},
        dataset_fingerprint=card.dataset.fingerprint,
        created_at=card.created_at,
        parameter_count=card.parameter_count,
        input_ranges=[pb.ValueRange(name=r.name, low=r.low, high=r.high) for r in card.input_ranges],
    )
    if card.validation is not None:
        info.side_errors.extend(
            pb.SideError(side=s.side, relative_l2=s.relative_l2, n_samples=s.n_samples)
            for s in card.validation.sides
        )
        info.validated_min_side, info.validated_max_side = card.validation.validated_range()
        info.validation_max_factor = card.validation.max_factor
    if card.calibration is not None:
        info.estimate_coverage = card.calibration.coverage
        info.error_indicator = card.calibration.indicator
        info.calibration_samples = card.calibration.n_samples
        if card.time_map is not None:
            info.rollout_calibrated_passes = (card.rollout_calibration or card.calibration).steps
    info.solver_unavailable_reason = solver_unavailable_reason(card)
    info.has_solver = not info.solver_unavailable_reason
    free = card.solver_free
    if free is not None:
        info.solver_free_estimate.CopyFrom(
            pb.SolverFreeEstimate(
                indicator=free.indicator,
                coverage=free.coverage,
                measured_coverage=free.measured_coverage,
                test_samples=free.n_test,
                calibration_samples=free.n_samples,
            )
        )
    return info
