!> A Fortran host driving a wavecp simulation through the module in include/wavecp.f90: the same
!> run as examples/c/host.c, which it must match bit for bit. jobs/square_dirichlet.toml with its
!> left side made `external`, its Dirichlet values imposed from here each step (the job's own
!> sine, so the run is the one `wavecp solve` makes of the job); output steps where `wavecp solve`
!> writes them; the state saved half-way and loaded into a second simulation that must finish
!> the same. Writes the final field to <out_dir>/f_field.txt.
!>
!>   cargo build --release -p wavecp-capi
!>   gfortran -O2 -ffp-contract=off include/wavecp.f90 examples/fortran/host.f90 \
!>            -Ltarget/release -lwavecp_c -Wl,-rpath,$PWD/target/release -o host_f
!>   ./host_f jobs/square_dirichlet.toml out [key=value ...]
program host
    use, intrinsic :: iso_c_binding, only: c_double, c_int64_t, c_int8_t
    use wavecp
    implicit none
    real(c_double), parameter :: pi = 3.141592653589793238462643383279502884_c_double
    integer, parameter :: every = 25   ! the job's output.every
    type(wavecp_sim) :: a, b
    character(len=4096) :: job, dir, arg
    integer(c_int64_t) :: nsteps, n, nb, nrec, half, bytes, k
    integer(c_int64_t), allocatable :: ids(:)
    real(c_double), allocatable :: u(:), u2(:), vals(:), rec(:)
    integer(c_int8_t), allocatable :: saved(:)
    real(c_double) :: t
    character(len=:), allocatable :: json
    integer :: i, unit

    if (command_argument_count() < 2) error stop "usage: host JOB OUT_DIR [key=value ...]"
    if (wavecp_abi_version() / 10000 /= WAVECP_ABI_MAJOR) error stop "libwavecp_c has another ABI"
    call get_command_argument(1, job)
    call get_command_argument(2, dir)

    call make(a, trim(dir)//"/f.vtkhdf")
    call wavecp_num_steps(a, nsteps)
    call wavecp_num_nodes(a, n)
    call wavecp_boundary_count(a, "left", nb)
    allocate (vals(nb), u(n), u2(n), ids(n))
    print '(i0, " nodes, ", i0, " steps, ", i0, " nodes on the left side")', n, nsteps, nb

    ! The run: output at step 0, every `every` steps and at the last, as `wavecp solve`.
    half = nsteps / 2
    call wavecp_write_output(a)
    do k = 0, nsteps - 1
        if (k == half) then
            call wavecp_state_size(a, bytes)
            allocate (saved(bytes))
            call wavecp_save_state(a, saved)
        end if
        call step(a)
        if (mod(k + 1, int(every, c_int64_t)) == 0 .or. k + 1 == nsteps) call wavecp_write_output(a)
    end do
    call wavecp_finish(a)
    call wavecp_get_field(a, u)
    call wavecp_node_ids(a, ids)
    call wavecp_num_receivers(a, nrec)
    allocate (rec(nrec))
    call wavecp_receivers(a, rec)
    call wavecp_time(a, t)
    print '("t = ", f8.6, ", receiver 0 = ", es25.17e3)', t, rec(1)
    call wavecp_summary_json(a, json)
    print '("summary: ", a)', json

    ! A second simulation of the same job, alive beside the first, from the saved state.
    call make(b, "")
    call wavecp_load_state(b, saved)
    do k = half, nsteps - 1
        call step(b)
    end do
    call wavecp_get_field(b, u2)
    if (any(transfer(u, 1_c_int64_t, size(u)) /= transfer(u2, 1_c_int64_t, size(u2)))) then
        write (0, '(a)') "the run restarted from the saved state differs from the uninterrupted one"
        error stop 3
    end if
    print '("restart from step ", i0, ": bitwise equal")', half

    open (newunit=unit, file=trim(dir)//"/f_field.txt", status="replace", action="write")
    do i = 1, int(n)
        write (unit, '(i0, 1x, es25.17e3)') ids(i), u(i)
    end do
    close (unit)
    call wavecp_destroy(b)
    call wavecp_destroy(a)

contains

    subroutine make(s, out)
        type(wavecp_sim), intent(out) :: s
        character(len=*), intent(in) :: out
        integer :: j
        call wavecp_create(s, trim(job))
        call wavecp_set(s, "boundary.0.kind=external")
        call wavecp_set(s, 'output.path="'//out//'"')
        do j = 3, command_argument_count()
            call get_command_argument(j, arg)
            call wavecp_set(s, trim(arg))
        end do
    end subroutine

    !> Imposes the left side's values (boundary[0]: 0.1 sin(2 pi 2 t)) for the next step, then takes it.
    subroutine step(s)
        type(wavecp_sim), intent(in) :: s
        integer(c_int64_t) :: kk
        real(c_double) :: dt, t_next
        call wavecp_step(s, kk)
        call wavecp_dt(s, dt)
        t_next = real(kk + 1, c_double) * dt
        vals = 0.1_c_double * sin(2.0_c_double * pi * 2.0_c_double * t_next)
        call wavecp_set_boundary_values(s, "left", vals)
        call wavecp_advance(s, 1)
    end subroutine

end program host
