from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DTYPE_UNSPECIFIED: _ClassVar[DType]
    DTYPE_FLOAT32: _ClassVar[DType]
    DTYPE_FLOAT64: _ClassVar[DType]

class SolveMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SOLVE_METHOD_AUTO: _ClassVar[SolveMethod]
    SOLVE_METHOD_SURROGATE: _ClassVar[SolveMethod]
    SOLVE_METHOD_CLASSICAL: _ClassVar[SolveMethod]

class AnswerPath(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ANSWER_PATH_UNSPECIFIED: _ClassVar[AnswerPath]
    ANSWER_PATH_SURROGATE: _ClassVar[AnswerPath]
    ANSWER_PATH_REFINED: _ClassVar[AnswerPath]
    ANSWER_PATH_CLASSICAL: _ClassVar[AnswerPath]

class EstimateMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ESTIMATE_METHOD_UNSPECIFIED: _ClassVar[EstimateMethod]
    ESTIMATE_METHOD_INDICATOR: _ClassVar[EstimateMethod]
    ESTIMATE_METHOD_SOLVER_FREE: _ClassVar[EstimateMethod]
    ESTIMATE_METHOD_LEDGER: _ClassVar[EstimateMethod]
DTYPE_UNSPECIFIED: DType
DTYPE_FLOAT32: DType
DTYPE_FLOAT64: DType
SOLVE_METHOD_AUTO: SolveMethod
SOLVE_METHOD_SURROGATE: SolveMethod
SOLVE_METHOD_CLASSICAL: SolveMethod
ANSWER_PATH_UNSPECIFIED: AnswerPath
ANSWER_PATH_SURROGATE: AnswerPath
ANSWER_PATH_REFINED: AnswerPath
ANSWER_PATH_CLASSICAL: AnswerPath
ESTIMATE_METHOD_UNSPECIFIED: EstimateMethod
ESTIMATE_METHOD_INDICATOR: EstimateMethod
ESTIMATE_METHOD_SOLVER_FREE: EstimateMethod
ESTIMATE_METHOD_LEDGER: EstimateMethod

class Tensor(_message.Message):
    __slots__ = ("shape", "dtype", "data")
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    shape: _containers.RepeatedScalarFieldContainer[int]
    dtype: DType
    data: bytes
    def __init__(self, shape: _Optional[_Iterable[int]] = ..., dtype: _Optional[_Union[DType, str]] = ..., data: _Optional[bytes] = ...) -> None: ...

class SolveRequest(_message.Message):
    __slots__ = ("model", "version", "inputs", "reference", "tolerance", "max_error", "method")
    class InputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    TOLERANCE_FIELD_NUMBER: _ClassVar[int]
    MAX_ERROR_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    inputs: _containers.MessageMap[str, Tensor]
    reference: bool
    tolerance: float
    max_error: float
    method: SolveMethod
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., inputs: _Optional[_Mapping[str, Tensor]] = ..., reference: _Optional[bool] = ..., tolerance: _Optional[float] = ..., max_error: _Optional[float] = ..., method: _Optional[_Union[SolveMethod, str]] = ...) -> None: ...

class AnswerCheck(_message.Message):
    __slots__ = ("estimated_relative_l2", "indicator", "coverage", "path", "refine_iterations", "residual", "refine_ms", "estimate_method", "out_of_distribution", "rung", "predicted_ms", "measured_ms")
    ESTIMATED_RELATIVE_L2_FIELD_NUMBER: _ClassVar[int]
    INDICATOR_FIELD_NUMBER: _ClassVar[int]
    COVERAGE_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    REFINE_ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    RESIDUAL_FIELD_NUMBER: _ClassVar[int]
    REFINE_MS_FIELD_NUMBER: _ClassVar[int]
    ESTIMATE_METHOD_FIELD_NUMBER: _ClassVar[int]
    OUT_OF_DISTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    RUNG_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_MS_FIELD_NUMBER: _ClassVar[int]
    MEASURED_MS_FIELD_NUMBER: _ClassVar[int]
    estimated_relative_l2: float
    indicator: float
    coverage: float
    path: AnswerPath
    refine_iterations: int
    residual: float
    refine_ms: float
    estimate_method: EstimateMethod
    out_of_distribution: _containers.RepeatedScalarFieldContainer[str]
    rung: str
    predicted_ms: float
    measured_ms: float
    def __init__(self, estimated_relative_l2: _Optional[float] = ..., indicator: _Optional[float] = ..., coverage: _Optional[float] = ..., path: _Optional[_Union[AnswerPath, str]] = ..., refine_iterations: _Optional[int] = ..., residual: _Optional[float] = ..., refine_ms: _Optional[float] = ..., estimate_method: _Optional[_Union[EstimateMethod, str]] = ..., out_of_distribution: _Optional[_Iterable[str]] = ..., rung: _Optional[str] = ..., predicted_ms: _Optional[float] = ..., measured_ms: _Optional[float] = ...) -> None: ...

class SolveResponse(_message.Message):
    __slots__ = ("model", "version", "outputs", "reference_outputs", "reference_relative_l2", "inference_ms", "checks", "grid_validated", "out_of_range_inputs")
    class OutputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...
    class ReferenceOutputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...
    class ReferenceRelativeL2Entry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_RELATIVE_L2_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_MS_FIELD_NUMBER: _ClassVar[int]
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    GRID_VALIDATED_FIELD_NUMBER: _ClassVar[int]
    OUT_OF_RANGE_INPUTS_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    outputs: _containers.MessageMap[str, Tensor]
    reference_outputs: _containers.MessageMap[str, Tensor]
    reference_relative_l2: _containers.ScalarMap[str, float]
    inference_ms: float
    checks: _containers.RepeatedCompositeFieldContainer[AnswerCheck]
    grid_validated: bool
    out_of_range_inputs: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., outputs: _Optional[_Mapping[str, Tensor]] = ..., reference_outputs: _Optional[_Mapping[str, Tensor]] = ..., reference_relative_l2: _Optional[_Mapping[str, float]] = ..., inference_ms: _Optional[float] = ..., checks: _Optional[_Iterable[_Union[AnswerCheck, _Mapping]]] = ..., grid_validated: _Optional[bool] = ..., out_of_range_inputs: _Optional[_Iterable[str]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class FieldSpec(_message.Message):
    __slots__ = ("name", "description", "shape", "dtype")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    dtype: DType
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., dtype: _Optional[_Union[DType, str]] = ...) -> None: ...

class SideError(_message.Message):
    __slots__ = ("side", "relative_l2", "n_samples")
    SIDE_FIELD_NUMBER: _ClassVar[int]
    RELATIVE_L2_FIELD_NUMBER: _ClassVar[int]
    N_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    side: int
    relative_l2: float
    n_samples: int
    def __init__(self, side: _Optional[int] = ..., relative_l2: _Optional[float] = ..., n_samples: _Optional[int] = ...) -> None: ...

class ValueRange(_message.Message):
    __slots__ = ("name", "low", "high")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LOW_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    name: str
    low: float
    high: float
    def __init__(self, name: _Optional[str] = ..., low: _Optional[float] = ..., high: _Optional[float] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "version", "versions", "architecture", "pde", "pde_parameters_json", "inputs", "outputs", "min_resolution", "max_resolution", "resolution_multiple", "metrics", "dataset_fingerprint", "created_at", "parameter_count", "side_errors", "validated_min_side", "validated_max_side", "validation_max_factor", "estimate_coverage", "error_indicator", "calibration_samples", "input_ranges", "rollout_calibrated_passes", "has_solver", "solver_unavailable_reason", "solver_free_estimate")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    PDE_FIELD_NUMBER: _ClassVar[int]
    PDE_PARAMETERS_JSON_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    MIN_RESOLUTION_FIELD_NUMBER: _ClassVar[int]
    MAX_RESOLUTION_FIELD_NUMBER: _ClassVar[int]
    RESOLUTION_MULTIPLE_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    DATASET_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    PARAMETER_COUNT_FIELD_NUMBER: _ClassVar[int]
    SIDE_ERRORS_FIELD_NUMBER: _ClassVar[int]
    VALIDATED_MIN_SIDE_FIELD_NUMBER: _ClassVar[int]
    VALIDATED_MAX_SIDE_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_MAX_FACTOR_FIELD_NUMBER: _ClassVar[int]
    ESTIMATE_COVERAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_INDICATOR_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    INPUT_RANGES_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_CALIBRATED_PASSES_FIELD_NUMBER: _ClassVar[int]
    HAS_SOLVER_FIELD_NUMBER: _ClassVar[int]
    SOLVER_UNAVAILABLE_REASON_FIELD_NUMBER: _ClassVar[int]
    SOLVER_FREE_ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    versions: _containers.RepeatedScalarFieldContainer[str]
    architecture: str
    pde: str
    pde_parameters_json: str
    inputs: _containers.RepeatedCompositeFieldContainer[FieldSpec]
    outputs: _containers.RepeatedCompositeFieldContainer[FieldSpec]
    min_resolution: int
    max_resolution: int
    resolution_multiple: int
    metrics: _containers.ScalarMap[str, float]
    dataset_fingerprint: str
    created_at: str
    parameter_count: int
    side_errors: _containers.RepeatedCompositeFieldContainer[SideError]
    validated_min_side: int
    validated_max_side: int
    validation_max_factor: float
    estimate_coverage: float
    error_indicator: str
    calibration_samples: int
    input_ranges: _containers.RepeatedCompositeFieldContainer[ValueRange]
    rollout_calibrated_passes: int
    has_solver: bool
    solver_unavailable_reason: str
    solver_free_estimate: SolverFreeEstimate
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., versions: _Optional[_Iterable[str]] = ..., architecture: _Optional[str] = ..., pde: _Optional[str] = ..., pde_parameters_json: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[FieldSpec, _Mapping]]] = ..., outputs: _Optional[_Iterable[_Union[FieldSpec, _Mapping]]] = ..., min_resolution: _Optional[int] = ..., max_resolution: _Optional[int] = ..., resolution_multiple: _Optional[int] = ..., metrics: _Optional[_Mapping[str, float]] = ..., dataset_fingerprint: _Optional[str] = ..., created_at: _Optional[str] = ..., parameter_count: _Optional[int] = ..., side_errors: _Optional[_Iterable[_Union[SideError, _Mapping]]] = ..., validated_min_side: _Optional[int] = ..., validated_max_side: _Optional[int] = ..., validation_max_factor: _Optional[float] = ..., estimate_coverage: _Optional[float] = ..., error_indicator: _Optional[str] = ..., calibration_samples: _Optional[int] = ..., input_ranges: _Optional[_Iterable[_Union[ValueRange, _Mapping]]] = ..., rollout_calibrated_passes: _Optional[int] = ..., has_solver: _Optional[bool] = ..., solver_unavailable_reason: _Optional[str] = ..., solver_free_estimate: _Optional[_Union[SolverFreeEstimate, _Mapping]] = ...) -> None: ...

class SolverFreeEstimate(_message.Message):
    __slots__ = ("indicator", "coverage", "measured_coverage", "test_samples", "calibration_samples")
    INDICATOR_FIELD_NUMBER: _ClassVar[int]
    COVERAGE_FIELD_NUMBER: _ClassVar[int]
    MEASURED_COVERAGE_FIELD_NUMBER: _ClassVar[int]
    TEST_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    indicator: str
    coverage: float
    measured_coverage: float
    test_samples: int
    calibration_samples: int
    def __init__(self, indicator: _Optional[str] = ..., coverage: _Optional[float] = ..., measured_coverage: _Optional[float] = ..., test_samples: _Optional[int] = ..., calibration_samples: _Optional[int] = ...) -> None: ...

class RolloutRequest(_message.Message):
    __slots__ = ("model", "version", "inputs", "steps", "max_estimated_error")
    class InputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    MAX_ESTIMATED_ERROR_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    inputs: _containers.MessageMap[str, Tensor]
    steps: int
    max_estimated_error: float
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., inputs: _Optional[_Mapping[str, Tensor]] = ..., steps: _Optional[int] = ..., max_estimated_error: _Optional[float] = ...) -> None: ...

class RolloutStep(_message.Message):
    __slots__ = ("model", "version", "step", "time", "outputs", "checks")
    class OutputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    step: int
    time: float
    outputs: _containers.MessageMap[str, Tensor]
    checks: _containers.RepeatedCompositeFieldContainer[AnswerCheck]
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., step: _Optional[int] = ..., time: _Optional[float] = ..., outputs: _Optional[_Mapping[str, Tensor]] = ..., checks: _Optional[_Iterable[_Union[AnswerCheck, _Mapping]]] = ...) -> None: ...
