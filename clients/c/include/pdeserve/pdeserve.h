/* pdeserve C client: a stable C ABI over the gRPC client of pdeserve.v1.Solver.
 *
 * Calls Solve, GetModel and Rollout on a pdeserve server from C (and, through clients/fortran, from
 * Fortran). The library is C++ inside; no C++ exception crosses this interface and no function aborts the
 * process: every failure is a status code (returned, and stored in the optional pdeserve_error) with a
 * message the caller can read.
 *
 * Status codes. Every function that can fail returns a pdeserve_status: 0 (PDESERVE_OK) on success, a gRPC
 * status code (1..16, same numbers and names) for a call the server (or the transport) refused, or one of
 * the library's own codes (>= 100) for a failure on the client side, before or after the call.
 *
 * Errors. Functions take a `pdeserve_error *err` as their last argument; it may be NULL. When it is not,
 * err->code is set to the returned status and err->message to a NUL-terminated message ("" on success),
 * truncated to fit its fixed size. The struct is owned by the caller (a local variable is fine).
 *
 * Memory and ownership. Every object is opaque and owned by the caller from the function that creates it
 * until the matching *_free / *_close call; those accept NULL. Strings returned as `const char *` belong to
 * the object they were read from and stay valid until it is freed. Arrays passed in are copied before the
 * function returns; arrays handed out are written into buffers the caller owns, after checking their size:
 * the library never writes past the capacity it is given.
 *
 * Thread safety. A pdeserve_client may be used by any number of threads at once (calls run concurrently
 * over one channel); closing it must not overlap with any call on it. A pdeserve_request may be read by
 * several concurrent calls (Solve, Rollout) but must not be modified while one is running. Answers and
 * model descriptions are immutable: any number of threads may read one. A pdeserve_rollout is used by one
 * thread at a time. pdeserve_options are read by pdeserve_client_open only.
 *
 * Layout. The wire carries row-major (C order) arrays. PDESERVE_ROW_MAJOR buffers are sent and received
 * as they are; PDESERVE_COLUMN_MAJOR buffers (Fortran order) hold the same array with the same indices,
 * stored with the first index fastest: the element at indices (i0, i1, ..., ik) of shape (n0, ..., nk) is
 * the same in both, only its place in memory differs, and the library converts. So a Fortran a(nx, ny)
 * declared with shape {nx, ny} and PDESERVE_COLUMN_MAJOR reaches the model as the field a[x, y], not its
 * transpose.
 */
#ifndef PDESERVE_PDESERVE_H
#define PDESERVE_PDESERVE_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32) && defined(PDESERVE_BUILDING)
#define PDESERVE_API __declspec(dllexport)
#elif defined(__GNUC__)
#define PDESERVE_API __attribute__((visibility("default")))
#else
#define PDESERVE_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Version of this interface: functions are only ever added, never changed, while it stays the same. */
#define PDESERVE_ABI_VERSION 1
PDESERVE_API int pdeserve_abi_version(void);

typedef enum pdeserve_status {
  PDESERVE_OK = 0,
  /* gRPC status codes, as the server (or the transport) answered them */
  PDESERVE_CANCELLED = 1,
  PDESERVE_UNKNOWN = 2,
  PDESERVE_INVALID_ARGUMENT = 3,
  PDESERVE_DEADLINE_EXCEEDED = 4,
  PDESERVE_NOT_FOUND = 5,
  PDESERVE_ALREADY_EXISTS = 6,
  PDESERVE_PERMISSION_DENIED = 7,
  PDESERVE_RESOURCE_EXHAUSTED = 8,
  PDESERVE_FAILED_PRECONDITION = 9,
  PDESERVE_ABORTED = 10,
  PDESERVE_OUT_OF_RANGE = 11,
  PDESERVE_UNIMPLEMENTED = 12,
  PDESERVE_INTERNAL = 13,
  PDESERVE_UNAVAILABLE = 14,
  PDESERVE_DATA_LOSS = 15,
  PDESERVE_UNAUTHENTICATED = 16,
  /* the library's own codes: nothing was sent, or the answer could not be handed out as asked */
  PDESERVE_BUFFER_TOO_SMALL = 100, /* the caller's buffer holds fewer elements than the array; untouched */
  PDESERVE_SHAPE_MISMATCH = 101,   /* the caller's array has as many elements but another shape; untouched */
  PDESERVE_BAD_ARGUMENT = 102,     /* a NULL pointer, an unknown dtype or layout, a negative dimension, ... */
  PDESERVE_NO_SUCH_FIELD = 103,    /* the answer has no output (or reference output, check) by that name */
  PDESERVE_NOT_SUPPORTED = 104,    /* an option this build's solver.proto has no field for */
  PDESERVE_CLIENT_FAILURE = 105    /* out of memory or another failure inside the library */
} pdeserve_status;

/* The status's name: "OK", "NOT_FOUND", "BUFFER_TOO_SMALL", ...; "UNKNOWN_STATUS" for any other number.
 * A static string. */
PDESERVE_API const char *pdeserve_status_name(int status);

#define PDESERVE_ERROR_MESSAGE_SIZE 1024
typedef struct pdeserve_error {
  int code;                                  /* the status the call returned */
  char message[PDESERVE_ERROR_MESSAGE_SIZE]; /* NUL-terminated; "" on success */
} pdeserve_error;

typedef enum pdeserve_dtype { PDESERVE_FLOAT32 = 1, PDESERVE_FLOAT64 = 2 } pdeserve_dtype;
typedef enum pdeserve_layout { PDESERVE_ROW_MAJOR = 0, PDESERVE_COLUMN_MAJOR = 1 } pdeserve_layout;

/* Which computation produced an answer (pdeserve.v1.AnswerPath). */
typedef enum pdeserve_path {
  PDESERVE_PATH_UNSPECIFIED = 0,
  PDESERVE_PATH_SURROGATE = 1, /* the neural operator's forward pass */
  PDESERVE_PATH_REFINED = 2,   /* an iterative solver started from it, run to the request's tolerance */
  PDESERVE_PATH_CLASSICAL = 3  /* the classical solver */
} pdeserve_path;

/* Where an estimate comes from (pdeserve.v1.EstimateMethod). */
typedef enum pdeserve_estimate_method {
  PDESERVE_ESTIMATE_NONE = 0,
  PDESERVE_ESTIMATE_INDICATOR = 1,  /* the PDE family's a-posteriori indicator */
  PDESERVE_ESTIMATE_SOLVER_FREE = 2 /* the inputs' distance from the training inputs */
} pdeserve_estimate_method;

/* Most dimensions of an array on the wire. */
#define PDESERVE_MAX_RANK 32

/* ---- client --------------------------------------------------------------------------------------- */

typedef struct pdeserve_options pdeserve_options;
typedef struct pdeserve_client pdeserve_client;

/* Options of a client, set before pdeserve_client_open (which copies them). Defaults: no token, plain
 * gRPC, a 60 s deadline per call (for a rollout, the whole stream), 3 retries after UNAVAILABLE with
 * exponential backoff from 0.1 s (streams are never retried). NULL when out of memory. */
PDESERVE_API pdeserve_options *pdeserve_options_new(void);
PDESERVE_API void pdeserve_options_free(pdeserve_options *options);
/* Sent as "authorization: Bearer TOKEN" (servers started with --auth-token-env need it); NULL: none. */
PDESERVE_API int pdeserve_options_set_token(pdeserve_options *options, const char *token, pdeserve_error *err);
/* Connect over TLS (to a TLS-terminating front of the server), verifying its certificate with these PEM
 * root certificates; NULL or "": the system's roots. */
PDESERVE_API int pdeserve_options_set_tls(pdeserve_options *options, const char *root_certificates_pem,
                                          pdeserve_error *err);
/* Deadline of every call in seconds (> 0). */
PDESERVE_API int pdeserve_options_set_deadline(pdeserve_options *options, double seconds, pdeserve_error *err);
/* Extra attempts after UNAVAILABLE (0..20). */
PDESERVE_API int pdeserve_options_set_retries(pdeserve_options *options, int retries, pdeserve_error *err);
/* Ray Serve application to route to, when one cluster serves several; NULL: none. */
PDESERVE_API int pdeserve_options_set_application(pdeserve_options *options, const char *application,
                                                  pdeserve_error *err);

/* A client of the server at `target` ("HOST:PORT"); `options` may be NULL (the defaults). The connection
 * is made on the first call, so a server that is down shows as UNAVAILABLE there, not here. */
PDESERVE_API int pdeserve_client_open(const char *target, const pdeserve_options *options,
                                      pdeserve_client **client, pdeserve_error *err);
PDESERVE_API void pdeserve_client_close(pdeserve_client *client);

/* ---- requests ------------------------------------------------------------------------------------- */

typedef struct pdeserve_request pdeserve_request;

/* A request for `model` at `version` (NULL or "": the newest), for Solve or Rollout. */
PDESERVE_API int pdeserve_request_new(const char *model, const char *version, pdeserve_request **request,
                                      pdeserve_error *err);
PDESERVE_API void pdeserve_request_free(pdeserve_request *request);
/* Adds (or replaces) the input field `name`: `rank` dimensions `shape` ((*grid) or (batch, *grid)), the
 * elements of `data` as `dtype` in `layout`. The data is copied. */
PDESERVE_API int pdeserve_request_add_input(pdeserve_request *request, const char *name, pdeserve_dtype dtype,
                                            pdeserve_layout layout, const void *data, int rank,
                                            const int64_t *shape, pdeserve_error *err);
/* Solve: also run the classical solver and return its solution and the error against it. */
PDESERVE_API int pdeserve_request_set_reference(pdeserve_request *request, int reference, pdeserve_error *err);
/* Solve: relative residual every answer must meet, in (0, 1]; 0 asks for none. */
PDESERVE_API int pdeserve_request_set_tolerance(pdeserve_request *request, double tolerance, pdeserve_error *err);
/* Solve: largest estimated relative L2 error an answer may carry (SolveRequest.max_error); 0 for no limit.
 * PDESERVE_NOT_SUPPORTED when the solver.proto this library was built from has no such field. */
PDESERVE_API int pdeserve_request_set_max_error(pdeserve_request *request, double max_error, pdeserve_error *err);
/* Solve, with max_error: which paths may answer (SolveRequest.method): PDESERVE_METHOD_AUTO (the cheapest
 * path predicted to meet max_error), PDESERVE_METHOD_SURROGATE, PDESERVE_METHOD_CLASSICAL.
 * PDESERVE_NOT_SUPPORTED when this build's solver.proto has no such field. */
typedef enum pdeserve_method {
  PDESERVE_METHOD_AUTO = 0,
  PDESERVE_METHOD_SURROGATE = 1,
  PDESERVE_METHOD_CLASSICAL = 2
} pdeserve_method;
PDESERVE_API int pdeserve_request_set_method(pdeserve_request *request, int method, pdeserve_error *err);
/* Whether this build's solver.proto has SolveRequest.max_error and method (1) or not (0). */
PDESERVE_API int pdeserve_has_max_error(void);

/* ---- Solve ---------------------------------------------------------------------------------------- */

typedef struct pdeserve_answer pdeserve_answer;

/* Calls Solve; on success *answer is a new answer (pdeserve_answer_free), else NULL. */
PDESERVE_API int pdeserve_solve(pdeserve_client *client, const pdeserve_request *request,
                                pdeserve_answer **answer, pdeserve_error *err);
PDESERVE_API void pdeserve_answer_free(pdeserve_answer *answer);

/* The model version that answered (owned by the answer). */
PDESERVE_API const char *pdeserve_answer_version(const pdeserve_answer *answer);
/* Output fields: how many, and the name of the index-th (0-based, in name order; NULL out of range). */
PDESERVE_API int pdeserve_answer_num_outputs(const pdeserve_answer *answer);
PDESERVE_API const char *pdeserve_answer_output_name(const pdeserve_answer *answer, int index);
/* The shape and dtype of output `name` as it came over the wire: *rank dimensions written to shape
 * (which has room for max_rank), the dtype to *dtype (either may be NULL). */
PDESERVE_API int pdeserve_answer_output_shape(const pdeserve_answer *answer, const char *name, int max_rank,
                                              int64_t *shape, int *rank, pdeserve_dtype *dtype,
                                              pdeserve_error *err);
/* Copies output `name` into `buffer` as `dtype` in `layout` (converting float32 <-> float64 as needed).
 * `capacity` is the buffer's size in elements: PDESERVE_BUFFER_TOO_SMALL, writing nothing, when the
 * output has more. */
PDESERVE_API int pdeserve_answer_output(const pdeserve_answer *answer, const char *name, pdeserve_dtype dtype,
                                        pdeserve_layout layout, void *buffer, size_t capacity,
                                        pdeserve_error *err);
/* The same into a buffer that is an array of `rank` dimensions `shape`: PDESERVE_BUFFER_TOO_SMALL when it
 * has fewer elements than the output, PDESERVE_SHAPE_MISMATCH when it has another shape; nothing written
 * then. */
PDESERVE_API int pdeserve_answer_output_shaped(const pdeserve_answer *answer, const char *name,
                                               pdeserve_dtype dtype, pdeserve_layout layout, void *buffer,
                                               int rank, const int64_t *shape, pdeserve_error *err);
/* The classical solution of output `name` (requests with reference set), as pdeserve_answer_output_shaped. */
PDESERVE_API int pdeserve_answer_reference_output(const pdeserve_answer *answer, const char *name,
                                                  pdeserve_dtype dtype, pdeserve_layout layout, void *buffer,
                                                  int rank, const int64_t *shape, pdeserve_error *err);
/* Relative L2 error of output `name` against the classical solution, averaged over the batch. */
PDESERVE_API int pdeserve_answer_reference_relative_l2(const pdeserve_answer *answer, const char *name,
                                                       double *value, pdeserve_error *err);
/* Milliseconds the server spent (validation, queueing, forward pass); whether the grid is validated. */
PDESERVE_API double pdeserve_answer_inference_ms(const pdeserve_answer *answer);
PDESERVE_API int pdeserve_answer_grid_validated(const pdeserve_answer *answer);
/* Input fields with values outside their training range: how many, and the index-th name. */
PDESERVE_API int pdeserve_answer_num_out_of_range_inputs(const pdeserve_answer *answer);
PDESERVE_API const char *pdeserve_answer_out_of_range_input(const pdeserve_answer *answer, int index);

/* The check of one sample's answer (pdeserve.v1.AnswerCheck). Fields marked has_* are 0 when the server
 * left the value absent. Laid out for Fortran's bind(c) (clients/fortran mirrors it). */
typedef struct pdeserve_check {
  double estimated_relative_l2; /* estimated relative L2 error of the answer */
  double indicator;             /* the PDE family's a-posteriori indicator */
  double coverage;              /* probability that the true error is at most the estimate; 0 without one */
  double residual;              /* relative residual in the classical equations (with a tolerance) */
  double refine_ms;             /* milliseconds spent refining this sample */
  double predicted_ms;          /* with max_error: milliseconds per sample predicted for the path taken */
  double measured_ms;           /* with max_error: milliseconds it took (0 otherwise, or without the field) */
  int32_t has_estimate;
  int32_t has_indicator;
  int32_t has_residual;
  int32_t path;                 /* a pdeserve_path */
  int32_t refine_iterations;
  int32_t estimate_method;      /* a pdeserve_estimate_method */
  int32_t num_out_of_distribution; /* reasons the sample lies outside the training data */
  int32_t reserved;
} pdeserve_check;

/* One check per sample, in the batch's order. */
PDESERVE_API int pdeserve_answer_num_checks(const pdeserve_answer *answer);
PDESERVE_API int pdeserve_answer_check(const pdeserve_answer *answer, int index, pdeserve_check *check,
                                       pdeserve_error *err);
/* The reason-th out-of-distribution reason of check `index` (owned by the answer; NULL out of range). */
PDESERVE_API const char *pdeserve_answer_check_out_of_distribution(const pdeserve_answer *answer, int index,
                                                                   int reason);

/* The ladder rung that answered check `index` (path CLASSICAL with max_error: e.g. "direct LDL^T, grid
 * 33", or "reference"); "" otherwise or when this build's proto has no rung; NULL out of range. */
PDESERVE_API const char *pdeserve_answer_check_rung(const pdeserve_answer *answer, int index);

/* ---- Rollout -------------------------------------------------------------------------------------- */

typedef struct pdeserve_rollout pdeserve_rollout;

/* Starts a Rollout of `steps` states from the request's inputs (its reference and tolerance are not
 * used); max_estimated_error > 0 holds each state to that estimated error (0: no limit). On success
 * *rollout is a new stream (pdeserve_rollout_close). The deadline covers the whole stream. */
PDESERVE_API int pdeserve_rollout_start(pdeserve_client *client, const pdeserve_request *request, int steps,
                                        double max_estimated_error, pdeserve_rollout **rollout,
                                        pdeserve_error *err);
/* The next state: PDESERVE_OK with *step a new answer (its outputs and checks; pdeserve_answer_step and
 * pdeserve_answer_time tell which state), or PDESERVE_OK with *step NULL once the stream has ended well;
 * a status when it failed (the states read before it stay valid). */
PDESERVE_API int pdeserve_rollout_next(pdeserve_rollout *rollout, pdeserve_answer **step, pdeserve_error *err);
/* Ends the stream (cancelling it on the server if it has not ended) and frees it. */
PDESERVE_API void pdeserve_rollout_close(pdeserve_rollout *rollout);
/* A rollout state's step (0 for the first predicted state; -1 for a Solve answer) and model time (returns
 * 1 and sets *time when the model knows it, else 0). */
PDESERVE_API int pdeserve_answer_step(const pdeserve_answer *answer);
PDESERVE_API int pdeserve_answer_time(const pdeserve_answer *answer, double *time);

/* ---- GetModel ------------------------------------------------------------------------------------- */

typedef struct pdeserve_model pdeserve_model;

/* Calls GetModel for `name` at `version` (NULL or "": the newest); *model is a new description. */
PDESERVE_API int pdeserve_get_model(pdeserve_client *client, const char *name, const char *version,
                                    pdeserve_model **model, pdeserve_error *err);
PDESERVE_API void pdeserve_model_free(pdeserve_model *model);
/* Strings owned by the description: "name", "version", "architecture", "pde", "pde_parameters_json",
 * "dataset_fingerprint", "created_at", "error_indicator", "solver_unavailable_reason"; NULL for another
 * key. */
PDESERVE_API const char *pdeserve_model_string(const pdeserve_model *model, const char *key);
/* Numbers: "min_resolution", "max_resolution", "resolution_multiple", "parameter_count",
 * "validated_min_side", "validated_max_side", "validation_max_factor", "estimate_coverage",
 * "calibration_samples", "rollout_calibrated_passes", "has_solver", "num_versions"; PDESERVE_BAD_ARGUMENT for
 * another key. */
PDESERVE_API int pdeserve_model_number(const pdeserve_model *model, const char *key, double *value,
                                       pdeserve_error *err);
/* Fields: kind 0 for inputs, 1 for outputs. The index-th field's name (owned by the description), its
 * training-resolution shape (rank written to *rank, up to max_rank dimensions to shape) and dtype. */
PDESERVE_API int pdeserve_model_num_fields(const pdeserve_model *model, int kind);
PDESERVE_API int pdeserve_model_field(const pdeserve_model *model, int kind, int index, const char **name,
                                      int max_rank, int64_t *shape, int *rank, pdeserve_dtype *dtype,
                                      pdeserve_error *err);
/* The model card's metrics (e.g. "test_relative_l2"), in name order: how many, the index-th, by name. */
PDESERVE_API int pdeserve_model_num_metrics(const pdeserve_model *model);
PDESERVE_API int pdeserve_model_metric(const pdeserve_model *model, int index, const char **name, double *value,
                                       pdeserve_error *err);
PDESERVE_API int pdeserve_model_metric_by_name(const pdeserve_model *model, const char *name, double *value,
                                               pdeserve_error *err);

#ifdef __cplusplus
}
#endif

#endif /* PDESERVE_PDESERVE_H */
