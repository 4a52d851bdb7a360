! darcy_design: a Fortran design loop that asks pdeserve for the Darcy pressure once per step.
!
! The design variable is the fraction d of a layered medium that conducts well: on an n x n grid,
! a(i, j) = 12 where the tilted bands mod(2 (i-1) + (j-1), w) < d w, else 3 (w = n / 4): the field at
! x_i, y_j, sent as it is (the module keeps Fortran's a(i, j) the model's a[i, j]). Each step solves
! -div(a grad u) = 1 with the served surrogate, reads the answer's check and moves d to bring the mean
! pressure to --target-mean (a more conducting medium has a lower pressure).
!
! The check is acted on: when the estimated relative L2 error is absent or above --max-estimate, the
! step asks again with a --tolerance (the server refines the answer until its relative residual meets
! it); when the model has no refinement (FAILED_PRECONDITION), with reference set (the classical
! solution). The same loop in C: darcy_design.c.
!
!   darcy_design --target 127.0.0.1:9000 --steps 5 --resolution 64 [--max-estimate 0.05]
!                [--tolerance 1e-6] [--target-mean 0.008] [--dump-dir DIR]
!
! Output: one "step=K ..." line per step, then a summary; exit code 1 when a call fails.
program darcy_design
  use, intrinsic :: iso_c_binding, only: c_float, c_double
  use pdeserve
  implicit none

  character(len=256) :: target = '127.0.0.1:9000', model = 'darcy-fno', dump_dir = ''
  character(len=1024) :: message
  character(len=64) :: version
  character(len=16) :: fallback
  integer :: steps = 5, n = 64, status, step, fallbacks, path
  real(c_double) :: max_estimate = 0.05d0, tolerance = 1d-6, target_mean = 0.008d0
  real(c_double) :: d, mean, estimate
  real(c_float), allocatable :: a(:, :), u(:, :)
  real(c_double), allocatable :: u64(:, :)
  type(pdeserve_client) :: client
  type(pdeserve_request) :: request
  type(pdeserve_answer) :: answer, better
  type(pdeserve_check) :: check

  call parse_arguments()
  allocate (a(n, n), u(n, n), u64(n, n))
  call pdeserve_open(client, target, status, message, deadline=30d0)
  call stop_on_failure('open')

  d = 0.5d0
  fallbacks = 0
  do step = 1, steps
    call coefficient(d, a)
    call pdeserve_request_init(request, model, status, message)
    call stop_on_failure('request')
    call pdeserve_add_input(request, 'a', a, status, message)
    call stop_on_failure('request')
    call pdeserve_solve(client, request, answer, status, message)
    call stop_on_failure('Solve')
    call pdeserve_get_output(answer, 'u', u, status, message)
    call stop_on_failure('Solve')
    call pdeserve_get_check(answer, 1, check, status, message)
    call stop_on_failure('Solve')
    call pdeserve_answer_info(answer, version=version)
    estimate = -1
    if (check%has_estimate /= 0) estimate = check%estimated_relative_l2
    path = check%path
    u64 = real(u, c_double)
    fallback = 'none'
    if (check%has_estimate == 0 .or. estimate > max_estimate) then
      ! not good enough: an answer that meets a tolerance, or the classical solution
      call pdeserve_request_init(request, model, status, message, tolerance=tolerance)
      if (status == PDESERVE_OK) call pdeserve_add_input(request, 'a', a, status, message)
      if (status == PDESERVE_OK) call pdeserve_solve(client, request, better, status, message)
      if (status == PDESERVE_OK) then
        fallback = 'tolerance'
        call pdeserve_get_output(better, 'u', u64, status, message)
      else if (status == PDESERVE_FAILED_PRECONDITION) then
        fallback = 'reference'
        call pdeserve_request_init(request, model, status, message, reference=.true.)
        if (status == PDESERVE_OK) call pdeserve_add_input(request, 'a', a, status, message)
        if (status == PDESERVE_OK) call pdeserve_solve(client, request, better, status, message)
        if (status == PDESERVE_OK) call pdeserve_get_reference(better, 'u', u64, status, message)
      end if
      call stop_on_failure('Solve (fallback)')
      call pdeserve_get_check(better, 1, check, status, message)
      path = check%path
      if (fallback == 'reference') path = PDESERVE_PATH_CLASSICAL
      call pdeserve_answer_free(better)
      fallbacks = fallbacks + 1
    end if
    mean = sum(u64) / real(n, c_double)**2
    write (*, '(a,i0,*(a))') 'step=', step, ' d=', num(d), ' u_mean=', num(mean), ' u_max=', &
      num(maxval(u64)), ' estimate=', num(estimate), ' path=', trim(path_name(path)), ' fallback=', &
      trim(fallback), ' version=', trim(version)
    if (len_trim(dump_dir) > 0) call dump(step, fallback /= 'none')
    call pdeserve_answer_free(answer)
    call pdeserve_request_free(request)
    ! design update: the mean pressure falls as d grows
    d = min(0.95d0, max(0.05d0, d + 0.5d0 * (mean - target_mean) / target_mean))
  end do
  write (*, '(a,i0,a,i0,*(a))') 'steps=', steps, ' fallbacks=', fallbacks, ' d=', num(d), ' u_mean=', num(mean)
  call pdeserve_close(client)

contains

  subroutine coefficient(fraction, field)
    real(c_double), intent(in) :: fraction
    real(c_float), intent(out) :: field(:, :)
    integer :: i, j, w
    w = max(1, n / 4)
    do j = 1, n
      do i = 1, n
        field(i, j) = merge(12.0_c_float, 3.0_c_float, mod(2 * (i - 1) + (j - 1), w) < fraction * w)
      end do
    end do
  end subroutine

  ! The fields of a step as raw little-endian bytes in Fortran order (the first index fastest).
  subroutine dump(k, with_fallback)
    integer, intent(in) :: k
    logical, intent(in) :: with_fallback
    character(len=16) :: tag
    integer :: unit
    write (tag, '(i0)') k
    open (newunit=unit, file=trim(dump_dir)//'/a_step'//trim(tag)//'.f32', access='stream', &
          form='unformatted', status='replace')
    write (unit) a
    close (unit)
    open (newunit=unit, file=trim(dump_dir)//'/u_step'//trim(tag)//'.f32', access='stream', &
          form='unformatted', status='replace')
    write (unit) u
    close (unit)
    if (with_fallback) then
      open (newunit=unit, file=trim(dump_dir)//'/u_fallback_step'//trim(tag)//'.f64', access='stream', &
            form='unformatted', status='replace')
      write (unit) u64
      close (unit)
    end if
  end subroutine

  ! A number as the C example prints it (%.9e), without blanks.
  function num(x) result(text)
    real(c_double), intent(in) :: x
    character(len=:), allocatable :: text
    character(len=32) :: buffer
    write (buffer, '(es16.9e2)') x
    text = trim(adjustl(buffer))
  end function

  function path_name(p) result(name)
    integer, intent(in) :: p
    character(len=12) :: name
    select case (p)
    case (PDESERVE_PATH_SURROGATE)
      name = 'SURROGATE'
    case (PDESERVE_PATH_REFINED)
      name = 'REFINED'
    case (PDESERVE_PATH_CLASSICAL)
      name = 'CLASSICAL'
    case default
      name = 'UNSPECIFIED'
    end select
  end function

  subroutine stop_on_failure(what)
    character(*), intent(in) :: what
    if (status == PDESERVE_OK) return
    write (0, '(a,a,a,a,a,i0,a,a)') 'darcy_design: ', what, ' failed: ', pdeserve_status_name(status), &
      ' (', status, '): ', trim(message)
    call exit(1)
  end subroutine

  subroutine parse_arguments()
    integer :: k
    character(len=1024) :: flag, value
    k = 1
    do while (k <= command_argument_count())
      call get_command_argument(k, flag)
      if (flag == '--help') then
        print '(a)', 'usage: darcy_design [--target HOST:PORT] [--model NAME] [--steps N] [--resolution N]'
        print '(a)', '       [--max-estimate E] [--tolerance T] [--target-mean M] [--dump-dir DIR]'
        stop
      end if
      if (k == command_argument_count()) then
        write (0, '(a,a,a)') 'darcy_design: ', trim(flag), ' needs a value'
        call exit(2)
      end if
      call get_command_argument(k + 1, value)
      select case (flag)
      case ('--target')
        target = value
      case ('--model')
        model = value
      case ('--dump-dir')
        dump_dir = value
      case ('--steps')
        read (value, *) steps
      case ('--resolution')
        read (value, *) n
      case ('--max-estimate')
        read (value, *) max_estimate
      case ('--tolerance')
        read (value, *) tolerance
      case ('--target-mean')
        read (value, *) target_mean
      case default
        write (0, '(a,a)') 'darcy_design: unknown option ', trim(flag)
        call exit(2)
      end select
      k = k + 2
    end do
  end subroutine

end program darcy_design
