! client_check: the Fortran module's behaviour, for the test suite (tests/clients/test_c_fortran.py).
!
!   client_check layout TARGET N DIR        non-symmetric fields (float32, float64, a batch) solved; the
!                                           answers dumped in Fortran order to DIR
!   client_check model TARGET NAME          GetModel: fields, shapes, sides, metrics
!   client_check errors TARGET              unknown model, wrong shape, bad arguments: their statuses
!   client_check unavailable TARGET RETRIES a server that is down: the status after the retries
!   client_check small-buffer TARGET        outputs into buffers too small or of another shape
!   client_check rollout TARGET STEPS DIR   ns-fno rolled forward; each state dumped to DIR
!   client_check bench TARGET N             one Solve per line read from stdin; prints its microseconds
!
! Output: key=value lines. Exit 0 unless the check itself could not run.
program client_check
  use, intrinsic :: iso_c_binding, only: c_float, c_double, c_int64_t
  use pdeserve
  implicit none

  character(len=1024) :: mode, target, arg, message
  integer :: status
  type(pdeserve_client) :: client

  call get_command_argument(1, mode)
  call get_command_argument(2, target)
  select case (mode)
  case ('layout')
    call open_client(3)
    call layout()
  case ('model')
    call open_client(3)
    call describe()
  case ('errors')
    call open_client(3)
    call errors()
  case ('unavailable')
    call get_command_argument(3, arg)
    call unavailable()
  case ('small-buffer')
    call open_client(3)
    call small_buffer()
  case ('rollout')
    call open_client(3)
    call rollout()
  case ('bench')
    call open_client(3)
    call bench()
  case default
    write (0, '(a,a)') 'client_check: unknown mode ', trim(mode)
    call exit(2)
  end select
  call pdeserve_close(client)

contains

  subroutine open_client(retries)
    integer, intent(in) :: retries
    call pdeserve_open(client, target, status, message, deadline=60d0, retries=retries)
    call require('open')
  end subroutine

  subroutine require(what)
    character(*), intent(in) :: what
    if (status == PDESERVE_OK) return
    write (0, '(a,a,a,i0,a,a)') 'client_check: ', what, ' failed: ', status, ' ', trim(message)
    call exit(1)
  end subroutine

  subroutine report(what)
    character(*), intent(in) :: what
    write (*, '(a,a,a,i0,a,a,a,a)') trim(what), ' status=', '', status, ' name=', pdeserve_status_name(status), &
      ' message=', trim(message)
  end subroutine

  ! A field that is not symmetric: a(i, j) = 12 where ((2 (i-1) + (j-1)) / (n/4)) is even, else 3.
  subroutine field(n, a)
    integer, intent(in) :: n
    real(c_float), intent(out) :: a(n, n)
    integer :: i, j
    do j = 1, n
      do i = 1, n
        a(i, j) = merge(12.0_c_float, 3.0_c_float, mod((2 * (i - 1) + (j - 1)) / max(1, n / 4), 2) == 0)
      end do
    end do
  end subroutine

  subroutine write_raw(path, bytes4, bytes8)
    character(*), intent(in) :: path
    real(c_float), intent(in), optional :: bytes4(..)
    real(c_double), intent(in), optional :: bytes8(..)
    integer :: unit
    open (newunit=unit, file=path, access='stream', form='unformatted', status='replace')
    if (present(bytes4)) then
      select rank (bytes4)
      rank (2)
        write (unit) bytes4
      rank (3)
        write (unit) bytes4
      end select
    end if
    if (present(bytes8)) then
      select rank (bytes8)
      rank (2)
        write (unit) bytes8
      end select
    end if
    close (unit)
  end subroutine

  subroutine layout()
    integer :: n, b, rank_
    character(len=1024) :: dir
    real(c_float), allocatable :: a(:, :), u(:, :), batch(:, :, :), ubatch(:, :, :)
    real(c_double), allocatable :: a8(:, :), u8(:, :)
    integer(c_int64_t) :: dims(PDESERVE_MAX_RANK)
    type(pdeserve_request) :: request
    type(pdeserve_answer) :: answer
    call get_command_argument(3, arg)
    read (arg, *) n
    call get_command_argument(4, dir)
    allocate (a(n, n), u(n, n), a8(n, n), u8(n, n), batch(3, n, n), ubatch(3, n, n))
    call field(n, a)
    ! one float32 field, through the one-call form
    call pdeserve_solve_field(client, 'darcy-fno', 'a', a, 'u', u, status, message)
    call require('Solve float32')
    call write_raw(trim(dir)//'/u32.f32', bytes4=u)
    ! the same field as float64, read back as float64
    a8 = real(a, c_double)
    call pdeserve_solve_field(client, 'darcy-fno', 'a', a8, 'u', u8, status, message)
    call require('Solve float64')
    call write_raw(trim(dir)//'/u64.f64', bytes8=u8)
    ! a batch: the sample is the first index, as on the wire: batch(b, i, j); samples 2 and 3 transposed
    ! and mirrored
    batch(1, :, :) = a
    batch(2, :, :) = transpose(a)
    batch(3, :, :) = a(n:1:-1, :)
    call pdeserve_request_init(request, 'darcy-fno', status, message)
    call pdeserve_add_input(request, 'a', batch, status, message)
    call pdeserve_solve(client, request, answer, status, message)
    call require('Solve batch')
    call pdeserve_output_shape(answer, 'u', dims, rank_, status, message)
    write (*, '(a,i0,a,3(i0,1x))') 'batch_rank=', rank_, ' batch_shape=', dims(1:rank_)
    call pdeserve_get_output(answer, 'u', ubatch, status, message)
    call require('batch output')
    write (*, '(a,i0)') 'batch_checks=', pdeserve_num_checks(answer)
    call write_raw(trim(dir)//'/ubatch.f32', bytes4=ubatch)
    do b = 1, 3
      write (*, '(a,i0,a,f0.12)') 'sample=', b, ' u_center=', ubatch(b, n / 2 + 1, n / 2 + 1)
    end do
    call pdeserve_answer_free(answer)
    call pdeserve_request_free(request)
    write (*, '(a)') 'layout=done'
  end subroutine

  subroutine describe()
    type(pdeserve_model) :: model
    character(len=256) :: name, text
    integer(c_int64_t) :: dims(PDESERVE_MAX_RANK)
    integer :: kind, k, rank_
    real(c_double) :: value
    call get_command_argument(3, arg)
    call pdeserve_get_model(client, arg, model, status, message)
    if (status /= PDESERVE_OK) then
      call report('get_model')
      return
    end if
    call pdeserve_model_string(model, 'version', text, status, message)
    write (*, '(a,a)') 'version=', trim(text)
    call pdeserve_model_string(model, 'pde', text, status, message)
    write (*, '(a,a)') 'pde=', trim(text)
    call pdeserve_model_number(model, 'min_resolution', value, status, message)
    write (*, '(a,i0)') 'min_resolution=', int(value)
    call pdeserve_model_number(model, 'max_resolution', value, status, message)
    write (*, '(a,i0)') 'max_resolution=', int(value)
    do kind = PDESERVE_INPUTS, PDESERVE_OUTPUTS
      do k = 1, pdeserve_num_fields(model, kind)
        call pdeserve_model_field(model, kind, k, name, dims, rank_, status, message)
        call require('field')
        write (*, '(a,i0,a,a,a,*(i0,:,","))') 'field kind=', kind, ' name=', trim(name), ' shape=', dims(1:rank_)
      end do
    end do
    do k = 1, pdeserve_num_metrics(model)
      call pdeserve_model_metric_at(model, k, name, value, status, message)
      call require('metric')
      write (*, '(a,a,a,g0)') 'metric name=', trim(name), ' value=', value
    end do
    call pdeserve_model_metric(model, 'no-such-metric', value, status, message)
    call report('missing_metric')
    call pdeserve_model_free(model)
  end subroutine

  subroutine errors()
    real(c_float) :: a(64, 64), u(64, 64), line(4096), small(8, 8)
    real(c_double) :: big(64, 64)
    type(pdeserve_request) :: request
    a = 7.5
    call pdeserve_solve_field(client, 'no-such-model', 'a', a, 'u', u, status, message)
    call report('unknown_model')
    call pdeserve_solve_field(client, 'darcy-fno', 'a', line, 'u', u, status, message)
    call report('wrong_rank')
    call pdeserve_solve_field(client, 'darcy-fno', 'a', small, 'u', u, status, message)
    call report('grid_too_small')
    call pdeserve_solve_field(client, 'darcy-fno', 'b', a, 'u', u, status, message)
    call report('wrong_field')
    call pdeserve_solve_field(client, 'darcy-fno', 'a', a, 'u', u, status, message, tolerance=-1d0)
    call report('bad_tolerance')
    call pdeserve_solve_field(client, 'darcy-fno', 'a', a, 'nope', u, status, message)
    call report('missing_output')
    call pdeserve_request_init(request, 'darcy-fno', status, message, max_error=0.1d0, &
                               method=PDESERVE_METHOD_AUTO)
    call report('max_error')
    call pdeserve_request_free(request)

    ! a failed call leaves the client usable
    big = 7.5d0
    call pdeserve_solve_field(client, 'darcy-fno', 'a', big, 'u', big, status, message)
    call report('after_errors')
  end subroutine

  subroutine unavailable()
    real(c_float) :: a(64, 64), u(64, 64)
    integer :: retries
    integer(8) :: t0, t1, rate
    read (arg, *) retries
    call pdeserve_open(client, target, status, message, deadline=20d0, retries=retries)
    call require('open')
    a = 7.5
    u = -1
    call system_clock(t0, rate)
    call pdeserve_solve_field(client, 'darcy-fno', 'a', a, 'u', u, status, message)
    call system_clock(t1)
    call report('down')
    write (*, '(a,f0.3,a,l1)') 'elapsed_s=', real(t1 - t0) / real(rate), ' untouched=', all(u == -1)
  end subroutine

  subroutine small_buffer()
    real(c_float) :: a(64, 64)
    real(c_float), allocatable :: short(:, :), flat(:), wrong(:, :), exact(:), guard(:)
    type(pdeserve_request) :: request
    type(pdeserve_answer) :: answer
    integer(c_int64_t) :: count
    call field(64, a)
    call pdeserve_request_init(request, 'darcy-fno', status, message)
    call pdeserve_add_input(request, 'a', a, status, message)
    call pdeserve_solve(client, request, answer, status, message)
    call require('Solve')
    ! heap arrays, each exactly its size, so that AddressSanitizer sees any write past them
    allocate (short(63, 64), flat(4095), wrong(32, 128), exact(4096), guard(1))
    short = -1
    flat = -1
    wrong = -1
    call pdeserve_get_output(answer, 'u', short, status, message)
    call report('shaped_too_small')
    write (*, '(a,l1)') 'shaped_untouched=', all(short == -1)
    call pdeserve_get_output_elements(answer, 'u', flat, status, message)
    call report('flat_too_small')
    write (*, '(a,l1)') 'flat_untouched=', all(flat == -1)
    call pdeserve_get_output(answer, 'u', wrong, status, message)
    call report('shape_mismatch')
    write (*, '(a,l1)') 'mismatch_untouched=', all(wrong == -1)
    call pdeserve_get_output_elements(answer, 'u', exact, status, message, count=count)
    call report('flat_exact')
    write (*, '(a,i0,a,l1)') 'count=', count, ' filled=', all(exact /= -1)
    call pdeserve_answer_free(answer)
    call pdeserve_request_free(request)
  end subroutine

  subroutine rollout()
    integer :: steps, n, k, step, rank_
    character(len=1024) :: dir
    character(len=16) :: tag
    real(c_float), allocatable :: w0(:, :), w(:, :)
    integer(c_int64_t) :: dims(PDESERVE_MAX_RANK)
    real(c_double) :: time
    logical :: done, has_time
    type(pdeserve_request) :: request
    type(pdeserve_rollout) :: stream
    type(pdeserve_answer) :: state
    type(pdeserve_check) :: check
    integer :: i, j, t
    real(c_double), parameter :: pi = 3.141592653589793d0
    call get_command_argument(3, arg)
    read (arg, *) steps
    call get_command_argument(4, dir)
    n = 64
    allocate (w0(n, n), w(n, n))
    call pdeserve_request_init(request, 'ns-fno', status, message)
    do t = 0, 9  ! ten input states w@t=0..9 of a vorticity that is not symmetric in x and y
      do j = 1, n
        do i = 1, n
          w0(i, j) = real(sin(2 * pi * (i - 1) / n + 0.05d0 * t) * cos(4 * pi * (j - 1) / n) &
                          + 0.5d0 * sin(2 * pi * (j - 1) / n), c_float)
        end do
      end do
      write (tag, '(i0)') t
      call write_raw(trim(dir)//'/w_in'//trim(tag)//'.f32', bytes4=w0)
      call pdeserve_add_input(request, 'w@t='//trim(tag), w0, status, message)
      call require('input')
    end do
    call pdeserve_rollout_start(client, request, steps, stream, status, message)
    call require('Rollout')
    k = 0
    do
      call pdeserve_rollout_next(stream, state, done, status, message)
      if (status /= PDESERVE_OK .or. done) exit
      k = k + 1
      call pdeserve_answer_info(state, step=step, time=time, has_time=has_time)
      call pdeserve_output_shape(state, 'w', dims, rank_, status, message)
      call require('state shape')
      call pdeserve_get_output(state, 'w', w, status, message)
      call require('state')
      call pdeserve_get_check(state, 1, check, status, message)
      write (*, '(a,i0,a,l1,a,f0.6,a,i0,a,l1)') 'state step=', step, ' has_time=', has_time, ' time=', time, &
        ' path=', check%path, ' has_estimate=', check%has_estimate /= 0
      write (tag, '(i0)') step
      call write_raw(trim(dir)//'/w_step'//trim(tag)//'.f32', bytes4=w)
    end do
    call report('rollout_end')
    write (*, '(a,i0)') 'states=', k
    call pdeserve_answer_free(state)
    call pdeserve_rollout_close(stream)
    ! a stream closed before its end is cancelled, and the client goes on
    call pdeserve_rollout_start(client, request, steps, stream, status, message)
    call pdeserve_rollout_next(stream, state, done, status, message)
    call pdeserve_answer_free(state)
    call pdeserve_rollout_close(stream)
    call report('closed_early')
    call pdeserve_request_free(request)
  end subroutine

  subroutine bench()
    integer :: n, io
    real(c_float), allocatable :: a(:, :), u(:, :)
    integer(8) :: t0, t1, rate
    character(len=16) :: command
    call get_command_argument(3, arg)
    read (arg, *) n
    allocate (a(n, n), u(n, n))
    call field(n, a)
    do
      read (*, '(a)', iostat=io) command
      if (io /= 0 .or. command == 'quit') exit
      call system_clock(t0, rate)
      call pdeserve_solve_field(client, 'darcy-fno', 'a', a, 'u', u, status, message)
      call system_clock(t1)
      call require('Solve')
      write (*, '(a,f0.1)') 'us=', 1d6 * real(t1 - t0, c_double) / real(rate, c_double)
      flush (6)
    end do
  end subroutine

end program client_check
