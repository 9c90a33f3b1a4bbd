!> The surrogate handle from Fortran: the same forecast as examples/forecast/forecast.py (the
!> demo network, 8 frames of the demo case from the 8 before, at the host's vertices), written
!> to <out_dir>/f_forecast.txt; capi/tests/hosts.rs checks that both hosts get the same bits.
!>   forecast JOB MODEL OUT_DIR
program forecast
    use, intrinsic :: iso_c_binding, only: c_double, c_int64_t
    use wavecp
    implicit none
    type(wavecp_sim) :: sim
    type(wavecp_net) :: net
    character(len=4096) :: job, model, dir
    integer(c_int64_t) :: n, t_in, t_out, tris(3, 450)
    real(c_double), allocatable :: xy(:, :), frames(:, :), guess(:, :)
    real(c_double) :: frame_dt, dt, worst
    integer :: i, j, k, unit

    call get_command_argument(1, job)
    call get_command_argument(2, model)
    call get_command_argument(3, dir)
    call wavecp_create(sim, trim(job))
    call wavecp_num_nodes(sim, n)
    allocate (xy(2, n))
    call wavecp_coords(sim, xy)
    ! The generated 15 x 15 quads (nodes row by row, 0-based), each in two triangles.
    k = 0
    do j = 0, 14
        do i = 0, 14
            tris(:, k + 1) = [j*16 + i, j*16 + i + 1, j*16 + i + 17]
            tris(:, k + 2) = [j*16 + i, j*16 + i + 17, j*16 + i + 16]
            k = k + 2
        end do
    end do
    call wavecp_net_open(net, trim(model), "cpu")
    call wavecp_net_set_mesh(net, xy, tris)
    call wavecp_net_frames(net, t_in, t_out, frame_dt)
    call wavecp_dt(sim, dt)
    allocate (frames(n, t_in + t_out), guess(n, t_out))
    guess = 0
    call wavecp_advance(sim, 20)
    do k = 1, int(t_in + t_out)
        call wavecp_get_field(sim, frames(:, k))
        call wavecp_advance(sim, nint(frame_dt / dt))
    end do
    call wavecp_net_forecast(net, frames(:, 1:t_in), guess)
    worst = 0
    do k = 1, int(t_out)
        worst = max(worst, norm2(guess(:, k) - frames(:, t_in + k)) / norm2(frames(:, t_in + k)))
    end do
    print '("{""forecast_rel_l2"": ", es24.17, "}")', worst
    open (newunit=unit, file=trim(dir)//"/f_forecast.txt", status="replace", action="write")
    do k = 1, int(t_out)
        do i = 1, int(n)
            write (unit, '(es25.17e3)') guess(i, k)
        end do
    end do
    close (unit)
    call wavecp_net_destroy(net)
    call wavecp_destroy(sim)
end program forecast
