! pdeserve: Fortran interface to a pdeserve server (module `pdeserve`), over the C library (clients/c)
! through iso_c_binding.
!
! Arrays are native Fortran arrays of real(c_float) or real(c_double), of any rank (assumed rank), in and
! out. Layout rule: an array's indices are the model's indices, in the same order. A Fortran a(i, j) is
! the model's field a[i, j], the value at x_i, y_j: the array declared a(nx, ny) is sent with shape
! (nx, ny), not transposed (the library reorders the column-major memory into the wire's row-major
! order, and back for the answers). A batch is the first index, as on the wire: a(nbatch, nx, ny).
!
! Every subroutine has an integer `status` (PDESERVE_OK = 0 on success, a gRPC status code 1..16 for a
! refused call, the library's codes >= 100 otherwise) and an optional `message` that receives the
! reason (blank on success); no call stops the program. The few functions that cannot fail (counts)
! return their value. Outputs are copied into arrays the caller owns, after their shape is checked:
! never written past their end.
!
! Handles (pdeserve_client, pdeserve_request, pdeserve_answer, pdeserve_model, pdeserve_rollout) own C
! objects: free each with its pdeserve_*_free / _close subroutine. A client may be used from several
! threads (OpenMP) at once; the others from one thread at a time (or read-only).
module pdeserve
  use, intrinsic :: iso_c_binding
  implicit none
  private

  integer, parameter, public :: PDESERVE_OK = 0, PDESERVE_CANCELLED = 1, PDESERVE_UNKNOWN = 2, &
    PDESERVE_INVALID_ARGUMENT = 3, PDESERVE_DEADLINE_EXCEEDED = 4, PDESERVE_NOT_FOUND = 5, &
    PDESERVE_PERMISSION_DENIED = 7, PDESERVE_RESOURCE_EXHAUSTED = 8, PDESERVE_FAILED_PRECONDITION = 9, &
    PDESERVE_UNIMPLEMENTED = 12, PDESERVE_INTERNAL = 13, PDESERVE_UNAVAILABLE = 14, &
    PDESERVE_UNAUTHENTICATED = 16, PDESERVE_BUFFER_TOO_SMALL = 100, PDESERVE_SHAPE_MISMATCH = 101, &
    PDESERVE_BAD_ARGUMENT = 102, PDESERVE_NO_SUCH_FIELD = 103, PDESERVE_NOT_SUPPORTED = 104, &
    PDESERVE_CLIENT_FAILURE = 105
  ! AnswerCheck path and estimate method
  integer, parameter, public :: PDESERVE_PATH_SURROGATE = 1, PDESERVE_PATH_REFINED = 2, &
    PDESERVE_PATH_CLASSICAL = 3, PDESERVE_ESTIMATE_NONE = 0, PDESERVE_ESTIMATE_INDICATOR = 1, &
    PDESERVE_ESTIMATE_SOLVER_FREE = 2
  ! pdeserve_model_field's kind
  integer, parameter, public :: PDESERVE_INPUTS = 0, PDESERVE_OUTPUTS = 1
  integer, parameter, public :: PDESERVE_MAX_RANK = 32
  ! SolveRequest.method (with max_error)
  integer, parameter, public :: PDESERVE_METHOD_AUTO = 0, PDESERVE_METHOD_SURROGATE = 1, &
    PDESERVE_METHOD_CLASSICAL = 2

  integer(c_int), parameter :: FLOAT32 = 1, FLOAT64 = 2, COLUMN_MAJOR = 1

  type, public :: pdeserve_client
    type(c_ptr) :: ptr = c_null_ptr
  end type
  type, public :: pdeserve_request
    type(c_ptr) :: ptr = c_null_ptr
  end type
  type, public :: pdeserve_answer
    type(c_ptr) :: ptr = c_null_ptr
  end type
  type, public :: pdeserve_model
    type(c_ptr) :: ptr = c_null_ptr
  end type
  type, public :: pdeserve_rollout
    type(c_ptr) :: ptr = c_null_ptr
  end type

  ! The check of one sample's answer; has_* are 0 when the server left the value absent.
  type, bind(c), public :: pdeserve_check
    real(c_double) :: estimated_relative_l2 = 0, indicator = 0, coverage = 0, residual = 0, refine_ms = 0
    real(c_double) :: predicted_ms = 0, measured_ms = 0
    integer(c_int32_t) :: has_estimate = 0, has_indicator = 0, has_residual = 0, path = 0
    integer(c_int32_t) :: refine_iterations = 0, estimate_method = 0, num_out_of_distribution = 0
    integer(c_int32_t) :: reserved = 0
  end type

  type, bind(c) :: c_error
    integer(c_int) :: code = 0
    character(kind=c_char) :: message(1024) = c_null_char
  end type

  public :: pdeserve_open, pdeserve_close, pdeserve_request_init, pdeserve_request_free, &
    pdeserve_add_input, pdeserve_solve, pdeserve_solve_field, pdeserve_answer_free, &
    pdeserve_get_output, pdeserve_get_output_elements, pdeserve_output_shape, pdeserve_get_reference, &
    pdeserve_reference_error, pdeserve_num_checks, pdeserve_get_check, pdeserve_check_rung, pdeserve_answer_info, &
    pdeserve_rollout_start, pdeserve_rollout_next, pdeserve_rollout_close, pdeserve_get_model, &
    pdeserve_model_free, pdeserve_model_string, pdeserve_model_number, pdeserve_num_fields, &
    pdeserve_model_field, pdeserve_num_metrics, pdeserve_model_metric, pdeserve_model_metric_at, &
    pdeserve_status_name, pdeserve_has_max_error

  ! pdeserve_add_input(request, name, array, status [, message]): array real(c_float|c_double), any rank
  interface pdeserve_add_input
    module procedure add_input_r4, add_input_r8
  end interface
  ! pdeserve_get_output(answer, name, array, status [, message]): array of the output's shape exactly
  interface pdeserve_get_output
    module procedure get_output_r4, get_output_r8
  end interface
  ! pdeserve_get_output_elements(answer, name, buffer, status [, message, count]): a rank-1 buffer of at
  ! least as many elements, filled in column-major order (the first index fastest)
  interface pdeserve_get_output_elements
    module procedure get_elements_r4, get_elements_r8
  end interface
  ! pdeserve_get_reference(answer, name, array, status [, message]): the classical solution
  interface pdeserve_get_reference
    module procedure get_reference_r4, get_reference_r8
  end interface
  ! pdeserve_solve_field(client, model, input_name, input, output_name, output, status [, message,
  ! version, reference, tolerance, max_error, check]): one Solve with one input and one output field
  interface pdeserve_solve_field
    module procedure solve_field_r4, solve_field_r8
  end interface

  interface
    function c_options_new() bind(c, name='pdeserve_options_new') result(p)
      import :: c_ptr
      type(c_ptr) :: p
    end function
    subroutine c_options_free(p) bind(c, name='pdeserve_options_free')
      import :: c_ptr
      type(c_ptr), value :: p
    end subroutine
    function c_options_set_token(p, token, err) bind(c, name='pdeserve_options_set_token') result(s)
      import :: c_ptr, c_char, c_int, c_error
      type(c_ptr), value :: p
      character(kind=c_char), intent(in) :: token(*)
      type(c_error), intent(inout) :: err
      integer(c_int) :: s
    end function
    function c_options_set_tls(p, pem, err) bind(c, name='pdeserve_options_set_tls') result(s)
      import :: c_ptr, c_char, c_int, c_error
      type(c_ptr), value :: p
      character(kind=c_char), intent(in) :: pem(*)
      type(c_error), intent(inout) :: err
      integer(c_int) :: s
    end function
    function c_options_set_deadline(p, seconds, err) bind(c, name='pdeserve_options_set_deadline') result(s)
      import :: c_ptr, c_double, c_int, c_error
      type(c_ptr), value :: p
      real(c_double), value :: seconds
      type(c_error), intent(inout) :: err
      integer(c_int) :: s
    end function
    function c_options_set_retries(p, retries, err) bind(c, name='pdeserve_options_set_retries') result(s)
      import :: c_ptr, c_int, c_error
      type(c_ptr), value :: p
      integer(c_int), value :: retries
      type(c_error), intent(inout) :: err
      integer(c_int) :: s
    end function
    function c_options_set_application(p, app, err) bind(c, name='pdeserve_options_set_application') &
        result(s)
      import :: c_ptr, c_char, c_int, c_error
      type(c_ptr), value :: p
      character(kind=c_char), intent(in) :: app(*)
      type(c_error), intent(inout) :: err
      integer(c_int) :: s
    end function
    function c_client_open(target, options, client, err) bind(c, name='pdeserve_client_open') result(s)
      import :: c_ptr, c_char, c_int, c_error
      character(kind=c_char), intent(in) :: target(*)
      type(c_ptr), value :: options
      type(c_ptr), intent(out) :: client
      type(c_error), intent(inout) :: err
      integer(c_int) :: s
    end function
    subroutine c_client_close(p) bind(c, name='pdeserve_client_close')
      import :: c_ptr
      type(c_ptr), value :: p
    end subroutine
    function c_request_new(model, version, request, err) bind(c, name='pdeserve_request_new') result(s)
      import :: c_ptr, c_char, c_int, c_error
      character(kind=c_char), intent(in) :: model(*), version(*)
      type(c_ptr), intent(out) :: request
      type(c_error), intent(inout) :: err
      integer(c_int) :: s
    end function
    subroutine c_request_free(p) bind(c, name='pdeserve_request_free')
      import :: c_ptr
      type(c_ptr), value :: p
    end subroutine
    function c_request_add_input(request, name, dtype, layout, data, rank, shape, err) &
        bind(c, name='pdeserve_request_add_input') result(s)
      import :: c_ptr, c_char, c_int, c_int64_t, c_error
      type(c_ptr), value :: request
      character(kind=c_char), intent(in) :: name(*)
      integer(c_int), value :: dtype, layout
      type(c_ptr), value :: data
      integer(c_int), value :: rank
      integer(c_int64_t), intent(in) :: shape(*)
      type(c_error), intent(inout) :: err
      integer(c_int) :: s
    end function
    function c_request_set_reference(request, flag, err) bind(c, name='pdeserve_request_set_reference') &
        result(s)
      import :: c_ptr, c_int, c_error
      type(c_ptr), value :: request
      integer(c_int), value :: flag
      type(c_error), intent(inout) :: err
      integer(c_int) :: s
    end function
    function c_request_set_tolerance(request, value, err) bind(c, name='pdeserve_request_set_tolerance') &
        result(s)
      import :: c_ptr, c_int, c_double, c_error
      type(c_ptr), value :: request
      real(c_double), value :: value
      type(c_error), intent(inout) :: err
      integer(c_int) :: s
    end function
    function c_request_set_max_error(request, value, err) bind(c, name='pdeserve_request_set_max_error') &
        result(s)
      import :: c_ptr, c_int, c_double, c_error
      type(c_ptr), value :: request
      real(c_double), value :: value
      type(c_error), intent(inout) :: err
      integer(c_int) :: s
    end function
    function c_request_set_method(request, method, err) bind(c, name='pdeserve_request_set_method') result(s)
      import :: c_ptr, c_int, c_error
      type(c_ptr), value :: request
      integer(c_int), value :: method
      type(c_error), intent(inout) :: err
      integer(c_int) :: s
    end function
    function c_has_max_error() bind(c, name='pdeserve_has_max_error') result(s)
      import :: c_int
      integer(c_int) :: s
    end function
    function c_solve(client, request, answer, err) bind(c, name='pdeserve_solve') result(s)
      import :: c_ptr, c_int, c_error
      type(c_ptr), value :: client, request
      type(c_ptr), intent(out) :: answer
      type(c_error), intent(inout) :: err
      integer(c_int) :: s
    end function
    subroutine c_answer_free(p) bind(c, name='pdeserve_answer_free')
      import :: c_ptr
      type(c_ptr), value :: p
    end subroutine
    function c_answer_output_shape(answer, name, max_rank, shape, rank, dtype, err) &
        bind(c, name='pdeserve_answer_output_shape') result(s)
      import :: c_ptr, c_char, c_int, c_int64_t, c_error
      type(c_ptr), value :: answer
      character(kind=c_char), intent(in) :: name(*)
      integer(c_int), value :: max_rank
      integer(c_int64_t), intent(out) :: shape(*)
      integer(c_int), intent(out) :: rank, dtype
      type(c_error), intent(inout) :: err
      integer(c_int) :: s
    end function
    function c_answer_output(answer, name, dtype, layout, buffer, capacity, err) &
        bind(c, name='pdeserve_answer_output') result(s)
      import :: c_ptr, c_char, c_int, c_size_t, c_error
      type(c_ptr), value :: answer
      character(kind=c_char), intent(in) :: name(*)
      integer(c_int), value :: dtype, layout
      type(c_ptr), value :: buffer
      integer(c_size_t), value :: capacity
      type(c_error), intent(inout) :: err
      integer(c_int) :: s
    end function
    function c_answer_output_shaped(answer, name, dtype, layout, buffer, rank, shape, err) &
        bind(c, name='pdeserve_answer_output_shaped') result(s)
      import :: c_ptr, c_char, c_int, c_int64_t, c_error
      type(c_ptr), value :: answer
      character(kind=c_char), intent(in) :: name(*)
      integer(c_int), value :: dtype, layout
      type(c_ptr), value :: buffer
      integer(c_int), value :: rank
      integer(c_int64_t), intent(in) :: shape(*)
      type(c_error), intent(inout) :: err
      integer(c_int) :: s
    end function
    function c_answer_reference_output(answer, name, dtype, layout, buffer, rank, shape, err) &
        bind(c, name='pdeserve_answer_reference_output') result(s)
      import :: c_ptr, c_char, c_int, c_int64_t, c_error
      type(c_ptr), value :: answer
      character(kind=c_char), intent(in) :: name(*)
      integer(c_int), value :: dtype, layout
      type(c_ptr), value :: buffer
      integer(c_int), value :: rank
      integer(c_int64_t), intent(in) :: shape(*)
      type(c_error), intent(inout) :: err
      integer(c_int) :: s
    end function
    function c_answer_reference_relative_l2(answer, name, value, err) &
        bind(c, name='pdeserve_answer_reference_relative_l2') result(s)
      import :: c_ptr, c_char, c_int, c_double, c_error
      type(c_ptr), value :: answer
      character(kind=c_char), intent(in) :: name(*)
      real(c_double), intent(out) :: value
      type(c_error), intent(inout) :: err
      integer(c_int) :: s
    end function
    function c_answer_num_checks(answer) bind(c, name='pdeserve_answer_num_checks') result(n)
      import :: c_ptr, c_int
      type(c_ptr), value :: answer
      integer(c_int) :: n
    end function
    function c_answer_check(answer, index, check, err) bind(c, name='pdeserve_answer_check') result(s)
      import :: c_ptr, c_int, c_error, pdeserve_check
      type(c_ptr), value :: answer
      integer(c_int), value :: index
      type(pdeserve_check), intent(inout) :: check
      type(c_error), intent(inout) :: err
      integer(c_int) :: s
    end function
    function c_answer_check_rung(answer, index) bind(c, name='pdeserve_answer_check_rung') result(p)
      import :: c_ptr, c_int
      type(c_ptr), value :: answer
      integer(c_int), value :: index
      type(c_ptr) :: p
    end function
    function c_answer_version(answer) bind(c, name='pdeserve_answer_version') result(p)
      import :: c_ptr
      type(c_ptr), value :: answer
      type(c_ptr) :: p
    end function
    function c_answer_inference_ms(answer) bind(c, name='pdeserve_answer_inference_ms') result(v)
      import :: c_ptr, c_double
      type(c_ptr), value :: answer
      real(c_double) :: v
    end function
    function c_answer_grid_validated(answer) bind(c, name='pdeserve_answer_grid_validated') result(v)
      import :: c_ptr, c_int
      type(c_ptr), value :: answer
      integer(c_int) :: v
    end function
    function c_answer_step(answer) bind(c, name='pdeserve_answer_step') result(v)
      import :: c_ptr, c_int
      type(c_ptr), value :: answer
      integer(c_int) :: v
    end function
    function c_answer_time(answer, time) bind(c, name='pdeserve_answer_time') result(v)
      import :: c_ptr, c_int, c_double
      type(c_ptr), value :: answer
      real(c_double), intent(out) :: time
      integer(c_int) :: v
    end function
    function c_rollout_start(client, request, steps, max_error, rollout, err) &
        bind(c, name='pdeserve_rollout_start') result(s)
      import :: c_ptr, c_int, c_double, c_error
      type(c_ptr), value :: client, request
      integer(c_int), value :: steps
      real(c_double), value :: max_error
      type(c_ptr), intent(out) :: rollout
      type(c_error), intent(inout) :: err
      integer(c_int) :: s
    end function
    function c_rollout_next(rollout, step, err) bind(c, name='pdeserve_rollout_next') result(s)
      import :: c_ptr, c_int, c_error
      type(c_ptr), value :: rollout
      type(c_ptr), intent(out) :: step
      type(c_error), intent(inout) :: err
      integer(c_int) :: s
    end function
    subroutine c_rollout_close(p) bind(c, name='pdeserve_rollout_close')
      import :: c_ptr
      type(c_ptr), value :: p
    end subroutine
    function c_get_model(client, name, version, model, err) bind(c, name='pdeserve_get_model') result(s)
      import :: c_ptr, c_char, c_int, c_error
      type(c_ptr), value :: client
      character(kind=c_char), intent(in) :: name(*), version(*)
      type(c_ptr), intent(out) :: model
      type(c_error), intent(inout) :: err
      integer(c_int) :: s
    end function
    subroutine c_model_free(p) bind(c, name='pdeserve_model_free')
      import :: c_ptr
      type(c_ptr), value :: p
    end subroutine
    function c_model_string(model, key) bind(c, name='pdeserve_model_string') result(p)
      import :: c_ptr, c_char
      type(c_ptr), value :: model
      character(kind=c_char), intent(in) :: key(*)
      type(c_ptr) :: p
    end function
    function c_model_number(model, key, value, err) bind(c, name='pdeserve_model_number') result(s)
      import :: c_ptr, c_char, c_int, c_double, c_error
      type(c_ptr), value :: model
      character(kind=c_char), intent(in) :: key(*)
      real(c_double), intent(out) :: value
      type(c_error), intent(inout) :: err
      integer(c_int) :: s
    end function
    function c_model_num_fields(model, kind) bind(c, name='pdeserve_model_num_fields') result(n)
      import :: c_ptr, c_int
      type(c_ptr), value :: model
      integer(c_int), value :: kind
      integer(c_int) :: n
    end function
    function c_model_field(model, kind, index, name, max_rank, shape, rank, dtype, err) &
        bind(c, name='pdeserve_model_field') result(s)
      import :: c_ptr, c_int, c_int64_t, c_error
      type(c_ptr), value :: model
      integer(c_int), value :: kind, index
      type(c_ptr), intent(out) :: name
      integer(c_int), value :: max_rank
      integer(c_int64_t), intent(out) :: shape(*)
      integer(c_int), intent(out) :: rank, dtype
      type(c_error), intent(inout) :: err
      integer(c_int) :: s
    end function
    function c_model_num_metrics(model) bind(c, name='pdeserve_model_num_metrics') result(n)
      import :: c_ptr, c_int
      type(c_ptr), value :: model
      integer(c_int) :: n
    end function
    function c_model_metric(model, index, name, value, err) bind(c, name='pdeserve_model_metric') result(s)
      import :: c_ptr, c_int, c_double, c_error
      type(c_ptr), value :: model
      integer(c_int), value :: index
      type(c_ptr), intent(out) :: name
      real(c_double), intent(out) :: value
      type(c_error), intent(inout) :: err
      integer(c_int) :: s
    end function
    function c_model_metric_by_name(model, name, value, err) bind(c, name='pdeserve_model_metric_by_name') &
        result(s)
      import :: c_ptr, c_char, c_int, c_double, c_error
      type(c_ptr), value :: model
      character(kind=c_char), intent(in) :: name(*)
      real(c_double), intent(out) :: value
      type(c_error), intent(inout) :: err
      integer(c_int) :: s
    end function
    function c_status_name(code) bind(c, name='pdeserve_status_name') result(p)
      import :: c_ptr, c_int
      integer(c_int), value :: code
      type(c_ptr) :: p
    end function
    function c_strlen(s) bind(c, name='strlen') result(n)
      import :: c_ptr, c_size_t
      type(c_ptr), value :: s
      integer(c_size_t) :: n
    end function
  end interface

contains

  ! ---- helpers ------------------------------------------------------------------------------------

  pure function cstr(s) result(c)
    character(*), intent(in) :: s
    character(kind=c_char, len=len_trim(s) + 1) :: c
    c = trim(s)//c_null_char
  end function

  ! A C string (NUL-terminated, owned by the library) as a Fortran string; "" for NULL.
  function fstr(p) result(s)
    type(c_ptr), intent(in) :: p
    character(len=:), allocatable :: s
    character(kind=c_char), pointer :: chars(:)
    integer :: n, k
    if (.not. c_associated(p)) then
      s = ''
      return
    end if
    n = int(c_strlen(p))
    call c_f_pointer(p, chars, [n])
    allocate (character(len=n) :: s)
    do k = 1, n
      s(k:k) = chars(k)
    end do
  end function

  ! The status and message of a call: status from the C code, message (when present) from err.
  subroutine finish(code, err, status, message)
    integer(c_int), intent(in) :: code
    type(c_error), intent(in) :: err
    integer, intent(out) :: status
    character(*), intent(out), optional :: message
    integer :: k
    status = int(code)
    if (.not. present(message)) return
    message = ''
    if (code == 0) return
    do k = 1, min(len(message), size(err%message))
      if (err%message(k) == c_null_char) exit
      message(k:k) = err%message(k)
    end do
  end subroutine

  ! A failure found on the Fortran side, reported like the library's.
  subroutine refuse(code, text, status, message)
    integer, intent(in) :: code
    character(*), intent(in) :: text
    integer, intent(out) :: status
    character(*), intent(out), optional :: message
    status = code
    if (present(message)) message = text
  end subroutine

  ! The name of a status: "OK", "NOT_FOUND", "BUFFER_TOO_SMALL", ...
  function pdeserve_status_name(status) result(name)
    integer, intent(in) :: status
    character(len=:), allocatable :: name
    name = fstr(c_status_name(int(status, c_int)))
  end function

  ! Whether the library was built from a solver.proto with SolveRequest.max_error.
  logical function pdeserve_has_max_error()
    pdeserve_has_max_error = c_has_max_error() /= 0
  end function

  ! ---- client -------------------------------------------------------------------------------------

  ! Opens a client of `target` ("HOST:PORT"). deadline: seconds per call (default 60); retries: extra
  ! attempts after UNAVAILABLE (default 3); token: sent as "authorization: Bearer TOKEN";
  ! root_certificates: PEM text, connects over TLS verifying the server with it ("" for the system's
  ! roots, with tls=.true.); application: the Ray Serve application to route to.
  subroutine pdeserve_open(client, target, status, message, deadline, retries, token, tls, &
                           root_certificates, application)
    type(pdeserve_client), intent(inout) :: client
    character(*), intent(in) :: target
    integer, intent(out) :: status
    character(*), intent(out), optional :: message
    real(c_double), intent(in), optional :: deadline
    integer, intent(in), optional :: retries
    character(*), intent(in), optional :: token, root_certificates, application
    logical, intent(in), optional :: tls
    type(c_ptr) :: options
    type(c_error) :: err
    integer(c_int) :: code
    logical :: use_tls
    options = c_options_new()
    if (.not. c_associated(options)) then
      call refuse(PDESERVE_CLIENT_FAILURE, 'pdeserve: out of memory', status, message)
      return
    end if
    code = 0
    if (present(deadline)) code = c_options_set_deadline(options, deadline, err)
    if (code == 0 .and. present(retries)) code = c_options_set_retries(options, int(retries, c_int), err)
    if (code == 0 .and. present(token)) code = c_options_set_token(options, cstr(token), err)
    if (code == 0 .and. present(application)) code = c_options_set_application(options, cstr(application), err)
    use_tls = present(root_certificates)
    if (present(tls)) use_tls = use_tls .or. tls
    if (code == 0 .and. use_tls) then
      if (present(root_certificates)) then
        code = c_options_set_tls(options, root_certificates//c_null_char, err)
      else
        code = c_options_set_tls(options, c_null_char, err)
      end if
    end if
    if (code == 0) code = c_client_open(cstr(target), options, client%ptr, err)
    call c_options_free(options)
    call finish(code, err, status, message)
  end subroutine

  subroutine pdeserve_close(client)
    type(pdeserve_client), intent(inout) :: client
    call c_client_close(client%ptr)
    client%ptr = c_null_ptr
  end subroutine

  ! ---- requests -----------------------------------------------------------------------------------

  ! A request for `model` (at `version`, default the newest), with Solve's options: reference (also
  ! the classical solution), tolerance (a relative residual every answer must meet), max_error (largest
  ! estimated error an answer may carry) and method (PDESERVE_METHOD_*: which paths may answer with
  ! max_error); these two are NOT_SUPPORTED when the library's proto has no such fields.
  subroutine pdeserve_request_init(request, model, status, message, version, reference, tolerance, &
                                   max_error, method)
    type(pdeserve_request), intent(inout) :: request
    character(*), intent(in) :: model
    integer, intent(out) :: status
    character(*), intent(out), optional :: message
    character(*), intent(in), optional :: version
    logical, intent(in), optional :: reference
    real(c_double), intent(in), optional :: tolerance, max_error
    integer, intent(in), optional :: method
    type(c_error) :: err
    integer(c_int) :: code
    if (c_associated(request%ptr)) call c_request_free(request%ptr)
    if (present(version)) then
      code = c_request_new(cstr(model), cstr(version), request%ptr, err)
    else
      code = c_request_new(cstr(model), c_null_char, request%ptr, err)
    end if
    if (code == 0 .and. present(reference)) code = c_request_set_reference(request%ptr, merge(1, 0, reference), err)
    if (code == 0 .and. present(tolerance)) code = c_request_set_tolerance(request%ptr, tolerance, err)
    if (code == 0 .and. present(max_error)) code = c_request_set_max_error(request%ptr, max_error, err)
    if (code == 0 .and. present(method)) code = c_request_set_method(request%ptr, int(method, c_int), err)
    call finish(code, err, status, message)
  end subroutine

  subroutine pdeserve_request_free(request)
    type(pdeserve_request), intent(inout) :: request
    call c_request_free(request%ptr)
    request%ptr = c_null_ptr
  end subroutine

  subroutine add_input_r4(request, name, array, status, message)
    type(pdeserve_request), intent(inout) :: request
    character(*), intent(in) :: name
    real(c_float), intent(in), target, contiguous :: array(..)
    integer, intent(out) :: status
    character(*), intent(out), optional :: message
    call add_input(request, name, FLOAT32, c_loc(array), shape(array, kind=c_int64_t), status, message)
  end subroutine

  subroutine add_input_r8(request, name, array, status, message)
    type(pdeserve_request), intent(inout) :: request
    character(*), intent(in) :: name
    real(c_double), intent(in), target, contiguous :: array(..)
    integer, intent(out) :: status
    character(*), intent(out), optional :: message
    call add_input(request, name, FLOAT64, c_loc(array), shape(array, kind=c_int64_t), status, message)
  end subroutine

  subroutine add_input(request, name, dtype, data, dims, status, message)
    type(pdeserve_request), intent(inout) :: request
    character(*), intent(in) :: name
    integer(c_int), intent(in) :: dtype
    type(c_ptr), intent(in) :: data
    integer(c_int64_t), intent(in) :: dims(:)
    integer, intent(out) :: status
    character(*), intent(out), optional :: message
    type(c_error) :: err
    integer(c_int64_t) :: padded(max(1, size(dims)))
    padded(1:size(dims)) = dims
    call finish(c_request_add_input(request%ptr, cstr(name), dtype, COLUMN_MAJOR, data, int(size(dims), c_int), &
                                    padded, err), err, status, message)
  end subroutine

  ! ---- Solve --------------------------------------------------------------------------------------

  ! Calls Solve; `answer` (freed first if it holds one) receives the answer.
  subroutine pdeserve_solve(client, request, answer, status, message)
    type(pdeserve_client), intent(in) :: client
    type(pdeserve_request), intent(in) :: request
    type(pdeserve_answer), intent(inout) :: answer
    integer, intent(out) :: status
    character(*), intent(out), optional :: message
    type(c_error) :: err
    if (c_associated(answer%ptr)) call c_answer_free(answer%ptr)
    call finish(c_solve(client%ptr, request%ptr, answer%ptr, err), err, status, message)
  end subroutine

  subroutine pdeserve_answer_free(answer)
    type(pdeserve_answer), intent(inout) :: answer
    call c_answer_free(answer%ptr)
    answer%ptr = c_null_ptr
  end subroutine

  ! The shape of output `name` in the layout rule's order (the wire's); rank its number of dimensions.
  subroutine pdeserve_output_shape(answer, name, dims, rank_, status, message)
    type(pdeserve_answer), intent(in) :: answer
    character(*), intent(in) :: name
    integer(c_int64_t), intent(out) :: dims(:)
    integer, intent(out) :: rank_, status
    character(*), intent(out), optional :: message
    type(c_error) :: err
    integer(c_int) :: r, dtype
    integer(c_int64_t) :: buffer(PDESERVE_MAX_RANK)
    integer(c_int) :: code
    code = c_answer_output_shape(answer%ptr, cstr(name), int(PDESERVE_MAX_RANK, c_int), buffer, r, dtype, err)
    rank_ = int(r)
    if (code == 0) then
      if (r > size(dims)) then
        call refuse(PDESERVE_BUFFER_TOO_SMALL, 'pdeserve: the output has more dimensions than dims holds', &
                    status, message)
        return
      end if
      dims(1:r) = buffer(1:r)
    end if
    call finish(code, err, status, message)
  end subroutine

  subroutine get_output_r4(answer, name, array, status, message)
    type(pdeserve_answer), intent(in) :: answer
    character(*), intent(in) :: name
    real(c_float), intent(inout), target, contiguous :: array(..)
    integer, intent(out) :: status
    character(*), intent(out), optional :: message
    call copy_output(0, answer, name, FLOAT32, c_loc(array), shape(array, kind=c_int64_t), &
                     status, message)
  end subroutine

  subroutine get_output_r8(answer, name, array, status, message)
    type(pdeserve_answer), intent(in) :: answer
    character(*), intent(in) :: name
    real(c_double), intent(inout), target, contiguous :: array(..)
    integer, intent(out) :: status
    character(*), intent(out), optional :: message
    call copy_output(0, answer, name, FLOAT64, c_loc(array), shape(array, kind=c_int64_t), &
                     status, message)
  end subroutine

  ! An output (which 0) or reference output (which 1) into the array at `data` of shape `dims`.
  subroutine copy_output(which, answer, name, dtype, data, dims, status, message)
    integer, intent(in) :: which
    type(pdeserve_answer), intent(in) :: answer
    character(*), intent(in) :: name
    integer(c_int), intent(in) :: dtype
    type(c_ptr), intent(in) :: data
    integer(c_int64_t), intent(in) :: dims(:)
    integer, intent(out) :: status
    character(*), intent(out), optional :: message
    type(c_error) :: err
    integer(c_int64_t) :: padded(max(1, size(dims)))
    integer(c_int) :: code
    padded(1:size(dims)) = dims
    if (which == 0) then
      code = c_answer_output_shaped(answer%ptr, cstr(name), dtype, COLUMN_MAJOR, data, int(size(dims), c_int), &
                                    padded, err)
    else
      code = c_answer_reference_output(answer%ptr, cstr(name), dtype, COLUMN_MAJOR, data, int(size(dims), c_int), &
                                       padded, err)
    end if
    call finish(code, err, status, message)
  end subroutine

  subroutine get_elements_r4(answer, name, buffer, status, message, count)
    type(pdeserve_answer), intent(in) :: answer
    character(*), intent(in) :: name
    real(c_float), intent(inout), target, contiguous :: buffer(:)
    integer, intent(out) :: status
    character(*), intent(out), optional :: message
    integer(c_int64_t), intent(out), optional :: count
    type(c_error) :: err
    call finish(c_answer_output(answer%ptr, cstr(name), FLOAT32, COLUMN_MAJOR, c_loc(buffer), &
                                int(size(buffer), c_size_t), err), err, status, message)
    if (present(count)) call element_count(answer, name, count)
  end subroutine

  subroutine get_elements_r8(answer, name, buffer, status, message, count)
    type(pdeserve_answer), intent(in) :: answer
    character(*), intent(in) :: name
    real(c_double), intent(inout), target, contiguous :: buffer(:)
    integer, intent(out) :: status
    character(*), intent(out), optional :: message
    integer(c_int64_t), intent(out), optional :: count
    type(c_error) :: err
    call finish(c_answer_output(answer%ptr, cstr(name), FLOAT64, COLUMN_MAJOR, c_loc(buffer), &
                                int(size(buffer), c_size_t), err), err, status, message)
    if (present(count)) call element_count(answer, name, count)
  end subroutine

  subroutine element_count(answer, name, count)
    type(pdeserve_answer), intent(in) :: answer
    character(*), intent(in) :: name
    integer(c_int64_t), intent(out) :: count
    integer(c_int64_t) :: dims(PDESERVE_MAX_RANK)
    integer :: r, s
    call pdeserve_output_shape(answer, name, dims, r, s)
    count = 0
    if (s == 0) count = product(dims(1:r))
  end subroutine

  subroutine get_reference_r4(answer, name, array, status, message)
    type(pdeserve_answer), intent(in) :: answer
    character(*), intent(in) :: name
    real(c_float), intent(inout), target, contiguous :: array(..)
    integer, intent(out) :: status
    character(*), intent(out), optional :: message
    call copy_output(1, answer, name, FLOAT32, c_loc(array), shape(array, kind=c_int64_t), &
                     status, message)
  end subroutine

  subroutine get_reference_r8(answer, name, array, status, message)
    type(pdeserve_answer), intent(in) :: answer
    character(*), intent(in) :: name
    real(c_double), intent(inout), target, contiguous :: array(..)
    integer, intent(out) :: status
    character(*), intent(out), optional :: message
    call copy_output(1, answer, name, FLOAT64, c_loc(array), shape(array, kind=c_int64_t), &
                     status, message)
  end subroutine

  ! Relative L2 error of output `name` against the classical solution (requests with reference).
  subroutine pdeserve_reference_error(answer, name, value, status, message)
    type(pdeserve_answer), intent(in) :: answer
    character(*), intent(in) :: name
    real(c_double), intent(out) :: value
    integer, intent(out) :: status
    character(*), intent(out), optional :: message
    type(c_error) :: err
    call finish(c_answer_reference_relative_l2(answer%ptr, cstr(name), value, err), err, status, message)
  end subroutine

  ! How many checks (one per sample) the answer carries.
  integer function pdeserve_num_checks(answer)
    type(pdeserve_answer), intent(in) :: answer
    pdeserve_num_checks = int(c_answer_num_checks(answer%ptr))
  end function

  ! The check of sample `index` (1-based, in the batch's order).
  subroutine pdeserve_get_check(answer, index, check, status, message)
    type(pdeserve_answer), intent(in) :: answer
    integer, intent(in) :: index
    type(pdeserve_check), intent(inout) :: check
    integer, intent(out) :: status
    character(*), intent(out), optional :: message
    type(c_error) :: err
    call finish(c_answer_check(answer%ptr, int(index - 1, c_int), check, err), err, status, message)
  end subroutine

  ! The classical ladder rung that answered sample `index` (1-based; with max_error), "" for none.
  subroutine pdeserve_check_rung(answer, index, rung, status, message)
    type(pdeserve_answer), intent(in) :: answer
    integer, intent(in) :: index
    character(*), intent(out) :: rung
    integer, intent(out) :: status
    character(*), intent(out), optional :: message
    type(c_ptr) :: p
    rung = ''
    p = c_answer_check_rung(answer%ptr, int(index - 1, c_int))
    if (.not. c_associated(p)) then
      call refuse(PDESERVE_NO_SUCH_FIELD, 'pdeserve: no check of that sample', status, message)
      return
    end if
    rung = fstr(p)
    status = PDESERVE_OK
    if (present(message)) message = ''
  end subroutine

  ! What else the answer says, each optional: the version that answered, the rollout step (0-based; -1
  ! for a Solve answer) and its model time (has_time false when unknown), the server's milliseconds, and
  ! whether the grid lies in the model's validated range.
  subroutine pdeserve_answer_info(answer, version, step, time, has_time, inference_ms, grid_validated)
    type(pdeserve_answer), intent(in) :: answer
    character(*), intent(out), optional :: version
    integer, intent(out), optional :: step
    real(c_double), intent(out), optional :: time, inference_ms
    logical, intent(out), optional :: has_time, grid_validated
    real(c_double) :: t
    integer(c_int) :: known
    if (present(version)) version = fstr(c_answer_version(answer%ptr))
    if (present(step)) step = int(c_answer_step(answer%ptr))
    t = 0
    known = c_answer_time(answer%ptr, t)
    if (present(time)) time = t
    if (present(has_time)) has_time = known /= 0
    if (present(inference_ms)) inference_ms = c_answer_inference_ms(answer%ptr)
    if (present(grid_validated)) grid_validated = c_answer_grid_validated(answer%ptr) /= 0
  end subroutine

  ! One Solve of one input field into one output field, with the request's options; `check` receives
  ! the first sample's check.
  subroutine solve_field_r4(client, model, input_name, input, output_name, output, status, message, &
                            version, reference, tolerance, max_error, check)
    type(pdeserve_client), intent(in) :: client
    character(*), intent(in) :: model, input_name, output_name
    real(c_float), intent(in), contiguous :: input(..)
    real(c_float), intent(inout), contiguous :: output(..)
    integer, intent(out) :: status
    character(*), intent(out), optional :: message, version
    logical, intent(in), optional :: reference
    real(c_double), intent(in), optional :: tolerance, max_error
    type(pdeserve_check), intent(inout), optional :: check
    type(pdeserve_request) :: request
    type(pdeserve_answer) :: answer
    call pdeserve_request_init(request, model, status, message, version, reference, tolerance, max_error)
    if (status == 0) call pdeserve_add_input(request, input_name, input, status, message)
    if (status == 0) call pdeserve_solve(client, request, answer, status, message)
    if (status == 0) call pdeserve_get_output(answer, output_name, output, status, message)
    if (status == 0 .and. present(check)) call pdeserve_get_check(answer, 1, check, status, message)
    call pdeserve_answer_free(answer)
    call pdeserve_request_free(request)
  end subroutine

  subroutine solve_field_r8(client, model, input_name, input, output_name, output, status, message, &
                            version, reference, tolerance, max_error, check)
    type(pdeserve_client), intent(in) :: client
    character(*), intent(in) :: model, input_name, output_name
    real(c_double), intent(in), contiguous :: input(..)
    real(c_double), intent(inout), contiguous :: output(..)
    integer, intent(out) :: status
    character(*), intent(out), optional :: message, version
    logical, intent(in), optional :: reference
    real(c_double), intent(in), optional :: tolerance, max_error
    type(pdeserve_check), intent(inout), optional :: check
    type(pdeserve_request) :: request
    type(pdeserve_answer) :: answer
    call pdeserve_request_init(request, model, status, message, version, reference, tolerance, max_error)
    if (status == 0) call pdeserve_add_input(request, input_name, input, status, message)
    if (status == 0) call pdeserve_solve(client, request, answer, status, message)
    if (status == 0) call pdeserve_get_output(answer, output_name, output, status, message)
    if (status == 0 .and. present(check)) call pdeserve_get_check(answer, 1, check, status, message)
    call pdeserve_answer_free(answer)
    call pdeserve_request_free(request)
  end subroutine

  ! ---- Rollout ------------------------------------------------------------------------------------

  ! Starts a Rollout of `steps` states from the request's inputs; max_estimated_error > 0 holds each
  ! state to that estimated error (the classical solver's states beyond it).
  subroutine pdeserve_rollout_start(client, request, steps, rollout, status, message, max_estimated_error)
    type(pdeserve_client), intent(in) :: client
    type(pdeserve_request), intent(in) :: request
    integer, intent(in) :: steps
    type(pdeserve_rollout), intent(inout) :: rollout
    integer, intent(out) :: status
    character(*), intent(out), optional :: message
    real(c_double), intent(in), optional :: max_estimated_error
    type(c_error) :: err
    real(c_double) :: limit
    limit = 0
    if (present(max_estimated_error)) limit = max_estimated_error
    if (c_associated(rollout%ptr)) call c_rollout_close(rollout%ptr)
    call finish(c_rollout_start(client%ptr, request%ptr, int(steps, c_int), limit, rollout%ptr, err), &
                err, status, message)
  end subroutine

  ! The next state into `answer` (freed first); done is .true. once the stream has ended well.
  subroutine pdeserve_rollout_next(rollout, answer, done, status, message)
    type(pdeserve_rollout), intent(inout) :: rollout
    type(pdeserve_answer), intent(inout) :: answer
    logical, intent(out) :: done
    integer, intent(out) :: status
    character(*), intent(out), optional :: message
    type(c_error) :: err
    if (c_associated(answer%ptr)) call c_answer_free(answer%ptr)
    call finish(c_rollout_next(rollout%ptr, answer%ptr, err), err, status, message)
    done = status == 0 .and. .not. c_associated(answer%ptr)
  end subroutine

  subroutine pdeserve_rollout_close(rollout)
    type(pdeserve_rollout), intent(inout) :: rollout
    call c_rollout_close(rollout%ptr)
    rollout%ptr = c_null_ptr
  end subroutine

  ! ---- GetModel -----------------------------------------------------------------------------------

  subroutine pdeserve_get_model(client, name, model, status, message, version)
    type(pdeserve_client), intent(in) :: client
    character(*), intent(in) :: name
    type(pdeserve_model), intent(inout) :: model
    integer, intent(out) :: status
    character(*), intent(out), optional :: message
    character(*), intent(in), optional :: version
    type(c_error) :: err
    integer(c_int) :: code
    if (c_associated(model%ptr)) call c_model_free(model%ptr)
    if (present(version)) then
      code = c_get_model(client%ptr, cstr(name), cstr(version), model%ptr, err)
    else
      code = c_get_model(client%ptr, cstr(name), c_null_char, model%ptr, err)
    end if
    call finish(code, err, status, message)
  end subroutine

  subroutine pdeserve_model_free(model)
    type(pdeserve_model), intent(inout) :: model
    call c_model_free(model%ptr)
    model%ptr = c_null_ptr
  end subroutine

  ! A text of the description ("name", "version", "architecture", "pde", "pde_parameters_json",
  ! "dataset_fingerprint", "created_at", "error_indicator", "solver_unavailable_reason"); truncated to
  ! len(value).
  subroutine pdeserve_model_string(model, key, value, status, message)
    type(pdeserve_model), intent(in) :: model
    character(*), intent(in) :: key
    character(*), intent(out) :: value
    integer, intent(out) :: status
    character(*), intent(out), optional :: message
    type(c_ptr) :: p
    value = ''
    p = c_model_string(model%ptr, cstr(key))
    if (.not. c_associated(p)) then
      call refuse(PDESERVE_BAD_ARGUMENT, "pdeserve: no text '"//trim(key)//"' in a model description", &
                  status, message)
      return
    end if
    value = fstr(p)
    status = PDESERVE_OK
    if (present(message)) message = ''
  end subroutine

  ! A number of the description: "min_resolution", "max_resolution", "resolution_multiple",
  ! "parameter_count", "estimate_coverage", "has_solver", "rollout_calibrated_passes", ... (pdeserve.h).
  subroutine pdeserve_model_number(model, key, value, status, message)
    type(pdeserve_model), intent(in) :: model
    character(*), intent(in) :: key
    real(c_double), intent(out) :: value
    integer, intent(out) :: status
    character(*), intent(out), optional :: message
    type(c_error) :: err
    value = 0
    call finish(c_model_number(model%ptr, cstr(key), value, err), err, status, message)
  end subroutine

  ! How many input (kind PDESERVE_INPUTS) or output (PDESERVE_OUTPUTS) fields the model has.
  integer function pdeserve_num_fields(model, kind)
    type(pdeserve_model), intent(in) :: model
    integer, intent(in) :: kind
    pdeserve_num_fields = int(c_model_num_fields(model%ptr, int(kind, c_int)))
  end function

  ! Field `index` (1-based) of the inputs or outputs: its name and its shape at the training resolution.
  subroutine pdeserve_model_field(model, kind, index, name, dims, rank_, status, message)
    type(pdeserve_model), intent(in) :: model
    integer, intent(in) :: kind, index
    character(*), intent(out) :: name
    integer(c_int64_t), intent(out) :: dims(:)
    integer, intent(out) :: rank_, status
    character(*), intent(out), optional :: message
    type(c_error) :: err
    type(c_ptr) :: p
    integer(c_int) :: r, dtype, code
    name = ''
    rank_ = 0
    code = c_model_field(model%ptr, int(kind, c_int), int(index - 1, c_int), p, int(size(dims), c_int), dims, &
                         r, dtype, err)
    if (code == 0) then
      name = fstr(p)
      rank_ = int(r)
    end if
    call finish(code, err, status, message)
  end subroutine

  integer function pdeserve_num_metrics(model)
    type(pdeserve_model), intent(in) :: model
    pdeserve_num_metrics = int(c_model_num_metrics(model%ptr))
  end function

  ! The model card's metric `name` (e.g. "test_relative_l2").
  subroutine pdeserve_model_metric(model, name, value, status, message)
    type(pdeserve_model), intent(in) :: model
    character(*), intent(in) :: name
    real(c_double), intent(out) :: value
    integer, intent(out) :: status
    character(*), intent(out), optional :: message
    type(c_error) :: err
    value = 0
    call finish(c_model_metric_by_name(model%ptr, cstr(name), value, err), err, status, message)
  end subroutine

  ! Metric `index` (1-based, in name order): its name and value.
  subroutine pdeserve_model_metric_at(model, index, name, value, status, message)
    type(pdeserve_model), intent(in) :: model
    integer, intent(in) :: index
    character(*), intent(out) :: name
    real(c_double), intent(out) :: value
    integer, intent(out) :: status
    character(*), intent(out), optional :: message
    type(c_error) :: err
    type(c_ptr) :: p
    integer(c_int) :: code
    name = ''
    value = 0
    code = c_model_metric(model%ptr, int(index - 1, c_int), p, value, err)
    if (code == 0) name = fstr(p)
    call finish(code, err, status, message)
  end subroutine

end module pdeserve
