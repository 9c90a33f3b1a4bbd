!> wavecp from Fortran: a module over the C ABI (include/wavecp.h) through iso_c_binding.
!>
!>   use wavecp
!>   type(wavecp_sim) :: sim
!>   integer :: ierr
!>   call wavecp_create(sim, "jobs/square_dirichlet.toml", ierr)
!>   call wavecp_advance(sim, 10, ierr)
!>   call wavecp_get_field(sim, u, ierr)     ! u(:) sized by wavecp_num_nodes
!>   call wavecp_destroy(sim)
!>
!> Every call takes an optional last argument `ierr`: the status code (WAVECP_OK = 0, the others
!> as in wavecp.h), with the message in wavecp_last_error(). Without `ierr`, a failure stops the
!> program with the message. Arrays are this rank's nodes, in wavecp_node_ids order; their size
!> is the length passed to wavecp. MPI: wavecp_create_mpi takes the communicator as the Fortran
!> integer handle (MPI_COMM_WORLD, or one from MPI_Comm_split).
!>
!> Build: gfortran -c include/wavecp.f90, then link the host with -lwavecp_c.
module wavecp
    use, intrinsic :: iso_c_binding
    implicit none
    private

    integer, parameter, public :: WAVECP_OK = 0, WAVECP_ERR_NULL = 1, WAVECP_ERR_HANDLE = 2, &
        WAVECP_ERR_ORDER = 3, WAVECP_ERR_SIZE = 4, WAVECP_ERR_ARG = 5, WAVECP_ERR_JOB = 6, &
        WAVECP_ERR_MPI = 7, WAVECP_ERR_RUN = 8, WAVECP_ERR_INTERNAL = 9
    integer, parameter, public :: WAVECP_ABI_MAJOR = 1

    !> A simulation handle (NULL until created, and again after wavecp_destroy).
    type, public :: wavecp_sim
        type(c_ptr) :: ptr = c_null_ptr
    end type

    !> A network handle (a trained model forecasting frames at the host's vertices).
    type, public :: wavecp_net
        type(c_ptr) :: ptr = c_null_ptr
    end type

    public :: wavecp_abi_version, wavecp_last_error, wavecp_create, wavecp_create_mpi, &
        wavecp_set, wavecp_advance, wavecp_time, wavecp_dt, wavecp_step, wavecp_num_steps, &
        wavecp_num_nodes, wavecp_node_ids, wavecp_coords, wavecp_get_field, &
        wavecp_get_field_prev, wavecp_set_field, wavecp_boundary_count, wavecp_boundary_nodes, &
        wavecp_set_boundary_values, wavecp_num_receivers, wavecp_receivers, wavecp_state_size, &
        wavecp_save_state, wavecp_load_state, wavecp_write_output, wavecp_finish, wavecp_destroy, &
        wavecp_hybrid_windows, wavecp_submodel_windows, wavecp_summary_json, &
        wavecp_net_open, wavecp_net_set_mesh, wavecp_net_frames, wavecp_net_forecast, &
        wavecp_net_destroy

    interface
        function c_abi_version() bind(C, name="wavecp_abi_version") result(v)
            import :: c_int32_t
            integer(c_int32_t) :: v
        end function
        function c_last_error() bind(C, name="wavecp_last_error") result(p)
            import :: c_ptr
            type(c_ptr) :: p
        end function
        function c_strlen(p) bind(C, name="strlen") result(n)
            import :: c_ptr, c_size_t
            type(c_ptr), value :: p
            integer(c_size_t) :: n
        end function
        function c_hybrid_windows(s, a, r, k) bind(C, name="wavecp_sim_hybrid_windows") result(rc)
            import :: c_ptr, c_int, c_int64_t
            type(c_ptr), value :: s
            integer(c_int64_t), intent(out) :: a, r, k
            integer(c_int) :: rc
        end function
        function c_submodel_windows(s, w, ind) bind(C, name="wavecp_sim_submodel_windows") result(rc)
            import :: c_ptr, c_int, c_int64_t, c_double
            type(c_ptr), value :: s
            integer(c_int64_t), intent(out) :: w
            real(c_double), intent(out) :: ind
            integer(c_int) :: rc
        end function
        function c_summary_json(s, buf, cap, n) bind(C, name="wavecp_sim_summary_json") result(rc)
            import :: c_ptr, c_int, c_int64_t
            type(c_ptr), value :: s, buf
            integer(c_int64_t), value :: cap
            integer(c_int64_t), intent(out) :: n
            integer(c_int) :: rc
        end function
        function c_create(job, out) bind(C, name="wavecp_sim_create") result(rc)
            import :: c_char, c_ptr, c_int
            character(kind=c_char), intent(in) :: job(*)
            type(c_ptr), intent(out) :: out
            integer(c_int) :: rc
        end function
        function c_create_mpi(job, comm, out) bind(C, name="wavecp_sim_create_mpi") result(rc)
            import :: c_char, c_ptr, c_int
            character(kind=c_char), intent(in) :: job(*)
            integer(c_int), value :: comm
            type(c_ptr), intent(out) :: out
            integer(c_int) :: rc
        end function
        function c_set(s, kv) bind(C, name="wavecp_sim_set") result(rc)
            import :: c_char, c_ptr, c_int
            type(c_ptr), value :: s
            character(kind=c_char), intent(in) :: kv(*)
            integer(c_int) :: rc
        end function
        function c_advance(s, n) bind(C, name="wavecp_sim_advance") result(rc)
            import :: c_ptr, c_int, c_int64_t
            type(c_ptr), value :: s
            integer(c_int64_t), value :: n
            integer(c_int) :: rc
        end function
        function c_set_field(s, u, up, n) bind(C, name="wavecp_sim_set_field") result(rc)
            import :: c_ptr, c_int, c_int64_t, c_double
            type(c_ptr), value :: s
            real(c_double), intent(in) :: u(*), up(*)
            integer(c_int64_t), value :: n
            integer(c_int) :: rc
        end function
        function c_boundary_nodes(s, tag, ids, cap, n) bind(C, name="wavecp_sim_boundary_nodes") result(rc)
            import :: c_ptr, c_int, c_int64_t, c_char
            type(c_ptr), value :: s
            character(kind=c_char), intent(in) :: tag(*)
            type(c_ptr), value :: ids
            integer(c_int64_t), value :: cap
            integer(c_int64_t), intent(out) :: n
            integer(c_int) :: rc
        end function
        function c_set_boundary_values(s, tag, v, n) bind(C, name="wavecp_sim_set_boundary_values") result(rc)
            import :: c_ptr, c_int, c_int64_t, c_char, c_double
            type(c_ptr), value :: s
            character(kind=c_char), intent(in) :: tag(*)
            real(c_double), intent(in) :: v(*)
            integer(c_int64_t), value :: n
            integer(c_int) :: rc
        end function
        function c_save_state(s, buf, n) bind(C, name="wavecp_sim_save_state") result(rc)
            import :: c_ptr, c_int, c_int64_t, c_int8_t
            type(c_ptr), value :: s
            integer(c_int8_t), intent(out) :: buf(*)
            integer(c_int64_t), value :: n
            integer(c_int) :: rc
        end function
        function c_load_state(s, buf, n) bind(C, name="wavecp_sim_load_state") result(rc)
            import :: c_ptr, c_int, c_int64_t, c_int8_t
            type(c_ptr), value :: s
            integer(c_int8_t), intent(in) :: buf(*)
            integer(c_int64_t), value :: n
            integer(c_int) :: rc
        end function
        subroutine c_destroy(s) bind(C, name="wavecp_sim_destroy")
            import :: c_ptr
            type(c_ptr), value :: s
        end subroutine
        function c_net_open(model, device, out) bind(C, name="wavecp_net_open") result(rc)
            import :: c_char, c_ptr, c_int
            character(kind=c_char), intent(in) :: model(*), device(*)
            type(c_ptr), intent(out) :: out
            integer(c_int) :: rc
        end function
        function c_net_set_mesh(n, xy, np, tris, nt) bind(C, name="wavecp_net_set_mesh") result(rc)
            import :: c_ptr, c_int, c_int64_t, c_double
            type(c_ptr), value :: n
            real(c_double), intent(in) :: xy(*)
            integer(c_int64_t), value :: np, nt
            integer(c_int64_t), intent(in) :: tris(*)
            integer(c_int) :: rc
        end function
        function c_net_frames(n, t_in, t_out, dt) bind(C, name="wavecp_net_frames") result(rc)
            import :: c_ptr, c_int, c_int64_t, c_double
            type(c_ptr), value :: n
            integer(c_int64_t), intent(out) :: t_in, t_out
            real(c_double), intent(out) :: dt
            integer(c_int) :: rc
        end function
        function c_net_forecast(n, past, np, next, nn) bind(C, name="wavecp_net_forecast") result(rc)
            import :: c_ptr, c_int, c_int64_t, c_double
            type(c_ptr), value :: n
            real(c_double), intent(in) :: past(*)
            real(c_double), intent(inout) :: next(*)
            integer(c_int64_t), value :: np, nn
            integer(c_int) :: rc
        end function
        subroutine c_net_destroy(n) bind(C, name="wavecp_net_destroy")
            import :: c_ptr
            type(c_ptr), value :: n
        end subroutine
    end interface

    ! Signatures several entry points share.
    abstract interface
        function c_get_double(s, v) bind(C) result(rc)
            import :: c_ptr, c_int, c_double
            type(c_ptr), value :: s
            real(c_double), intent(out) :: v
            integer(c_int) :: rc
        end function
        function c_get_int64(s, v) bind(C) result(rc)
            import :: c_ptr, c_int, c_int64_t
            type(c_ptr), value :: s
            integer(c_int64_t), intent(out) :: v
            integer(c_int) :: rc
        end function
        function c_int64_array(s, a, n) bind(C) result(rc)
            import :: c_ptr, c_int, c_int64_t
            type(c_ptr), value :: s
            integer(c_int64_t), intent(out) :: a(*)
            integer(c_int64_t), value :: n
            integer(c_int) :: rc
        end function
        function c_out_doubles(s, a, n) bind(C) result(rc)
            import :: c_ptr, c_int, c_int64_t, c_double
            type(c_ptr), value :: s
            real(c_double), intent(out) :: a(*)
            integer(c_int64_t), value :: n
            integer(c_int) :: rc
        end function
        function c_no_args(s) bind(C) result(rc)
            import :: c_ptr, c_int
            type(c_ptr), value :: s
            integer(c_int) :: rc
        end function
    end interface

    ! The entry points that share a signature, bound to their C names.
    procedure(c_get_double), bind(C, name="wavecp_sim_time") :: c_time
    procedure(c_get_double), bind(C, name="wavecp_sim_dt") :: c_dt
    procedure(c_get_int64), bind(C, name="wavecp_sim_step") :: c_step
    procedure(c_get_int64), bind(C, name="wavecp_sim_num_steps") :: c_num_steps
    procedure(c_get_int64), bind(C, name="wavecp_sim_num_nodes") :: c_num_nodes
    procedure(c_get_int64), bind(C, name="wavecp_sim_num_receivers") :: c_num_receivers
    procedure(c_get_int64), bind(C, name="wavecp_sim_state_size") :: c_state_size
    procedure(c_int64_array), bind(C, name="wavecp_sim_node_ids") :: c_node_ids
    procedure(c_out_doubles), bind(C, name="wavecp_sim_coords") :: c_coords
    procedure(c_out_doubles), bind(C, name="wavecp_sim_get_field") :: c_get_field
    procedure(c_out_doubles), bind(C, name="wavecp_sim_get_field_prev") :: c_get_field_prev
    procedure(c_out_doubles), bind(C, name="wavecp_sim_receivers") :: c_receivers
    procedure(c_no_args), bind(C, name="wavecp_sim_write_output") :: c_write_output
    procedure(c_no_args), bind(C, name="wavecp_sim_finish") :: c_finish

contains

    !> The ABI version of the loaded library: major * 10000 + minor * 100 + patch.
    integer function wavecp_abi_version()
        wavecp_abi_version = int(c_abi_version())
    end function

    !> The message of this thread's last failed call.
    function wavecp_last_error() result(msg)
        character(len=:), allocatable :: msg
        type(c_ptr) :: p
        character(kind=c_char), pointer :: chars(:)
        integer :: n, i
        p = c_last_error()
        n = int(c_strlen(p))
        call c_f_pointer(p, chars, [n])
        allocate (character(len=n) :: msg)
        do i = 1, n
            msg(i:i) = chars(i)
        end do
    end function

    !> Hands the status code back, or stops with the message when the caller gave no ierr.
    subroutine done(rc, ierr, what)
        integer(c_int), intent(in) :: rc
        integer, intent(out), optional :: ierr
        character(len=*), intent(in) :: what
        if (present(ierr)) then
            ierr = int(rc)
        else if (rc /= WAVECP_OK) then
            write (0, '(a, ": ", a)') what, wavecp_last_error()
            error stop 2
        end if
    end subroutine

    subroutine wavecp_create(sim, job, ierr)
        type(wavecp_sim), intent(out) :: sim
        character(len=*), intent(in) :: job
        integer, intent(out), optional :: ierr
        call done(c_create(trim(job)//c_null_char, sim%ptr), ierr, "wavecp_create")
    end subroutine

    !> On the ranks of the communicator `comm` (a Fortran MPI handle); collective.
    subroutine wavecp_create_mpi(sim, job, comm, ierr)
        type(wavecp_sim), intent(out) :: sim
        character(len=*), intent(in) :: job
        integer, intent(in) :: comm
        integer, intent(out), optional :: ierr
        call done(c_create_mpi(trim(job)//c_null_char, int(comm, c_int), sim%ptr), ierr, "wavecp_create_mpi")
    end subroutine

    !> Overrides a job key, "key=value", before the first advance, query or output call.
    subroutine wavecp_set(sim, key_equals_value, ierr)
        type(wavecp_sim), intent(in) :: sim
        character(len=*), intent(in) :: key_equals_value
        integer, intent(out), optional :: ierr
        call done(c_set(sim%ptr, trim(key_equals_value)//c_null_char), ierr, "wavecp_set")
    end subroutine

    subroutine wavecp_advance(sim, steps, ierr)
        type(wavecp_sim), intent(in) :: sim
        integer, intent(in) :: steps
        integer, intent(out), optional :: ierr
        call done(c_advance(sim%ptr, int(steps, c_int64_t)), ierr, "wavecp_advance")
    end subroutine

    !> A hybrid job's windows accepted and rejected so far, and the steps the network replaced.
    subroutine wavecp_hybrid_windows(sim, accepted, rejected, steps_surrogate, ierr)
        type(wavecp_sim), intent(in) :: sim
        integer(c_int64_t), intent(out) :: accepted, rejected, steps_surrogate
        integer, intent(out), optional :: ierr
        call done(c_hybrid_windows(sim%ptr, accepted, rejected, steps_surrogate), ierr, &
            "wavecp_hybrid_windows")
    end subroutine

    !> A submodel job's windows done so far and the latest one's indicator (NaN before one).
    subroutine wavecp_submodel_windows(sim, windows, indicator, ierr)
        type(wavecp_sim), intent(in) :: sim
        integer(c_int64_t), intent(out) :: windows
        real(c_double), intent(out) :: indicator
        integer, intent(out), optional :: ierr
        call done(c_submodel_windows(sim%ptr, windows, indicator), ierr, "wavecp_submodel_windows")
    end subroutine

    !> Where the run stands, as one JSON object (see wavecp_sim_summary_json in wavecp.h);
    !> empty when the call fails.
    subroutine wavecp_summary_json(sim, json, ierr)
        type(wavecp_sim), intent(in) :: sim
        character(len=:), allocatable, intent(out) :: json
        integer, intent(out), optional :: ierr
        character(kind=c_char), allocatable, target :: buf(:)
        integer(c_int64_t) :: n
        integer(c_int) :: rc
        integer :: i
        rc = c_summary_json(sim%ptr, c_null_ptr, 0_c_int64_t, n)
        if (rc == WAVECP_OK) then
            allocate (buf(n + 1))
            rc = c_summary_json(sim%ptr, c_loc(buf), n + 1, n)
        end if
        if (rc == WAVECP_OK) then
            allocate (character(len=n) :: json)
            do i = 1, int(n)
                json(i:i) = buf(i)
            end do
        else
            json = ""
        end if
        call done(rc, ierr, "wavecp_summary_json")
    end subroutine

    subroutine wavecp_time(sim, t, ierr)
        type(wavecp_sim), intent(in) :: sim
        real(c_double), intent(out) :: t
        integer, intent(out), optional :: ierr
        call done(c_time(sim%ptr, t), ierr, "wavecp_time")
    end subroutine

    subroutine wavecp_dt(sim, dt, ierr)
        type(wavecp_sim), intent(in) :: sim
        real(c_double), intent(out) :: dt
        integer, intent(out), optional :: ierr
        call done(c_dt(sim%ptr, dt), ierr, "wavecp_dt")
    end subroutine

    subroutine wavecp_step(sim, step, ierr)
        type(wavecp_sim), intent(in) :: sim
        integer(c_int64_t), intent(out) :: step
        integer, intent(out), optional :: ierr
        call done(c_step(sim%ptr, step), ierr, "wavecp_step")
    end subroutine

    subroutine wavecp_num_steps(sim, n, ierr)
        type(wavecp_sim), intent(in) :: sim
        integer(c_int64_t), intent(out) :: n
        integer, intent(out), optional :: ierr
        call done(c_num_steps(sim%ptr, n), ierr, "wavecp_num_steps")
    end subroutine

    subroutine wavecp_num_nodes(sim, n, ierr)
        type(wavecp_sim), intent(in) :: sim
        integer(c_int64_t), intent(out) :: n
        integer, intent(out), optional :: ierr
        call done(c_num_nodes(sim%ptr, n), ierr, "wavecp_num_nodes")
    end subroutine

    subroutine wavecp_node_ids(sim, ids, ierr)
        type(wavecp_sim), intent(in) :: sim
        integer(c_int64_t), intent(out), contiguous :: ids(:)
        integer, intent(out), optional :: ierr
        call done(c_node_ids(sim%ptr, ids, size(ids, kind=c_int64_t)), ierr, "wavecp_node_ids")
    end subroutine

    !> xy(1, i), xy(2, i): the coordinates of node i.
    subroutine wavecp_coords(sim, xy, ierr)
        type(wavecp_sim), intent(in) :: sim
        real(c_double), intent(out), contiguous :: xy(:, :)
        integer, intent(out), optional :: ierr
        call done(c_coords(sim%ptr, xy, size(xy, 2, kind=c_int64_t)), ierr, "wavecp_coords")
    end subroutine

    subroutine wavecp_get_field(sim, u, ierr)
        type(wavecp_sim), intent(in) :: sim
        real(c_double), intent(out), contiguous :: u(:)
        integer, intent(out), optional :: ierr
        call done(c_get_field(sim%ptr, u, size(u, kind=c_int64_t)), ierr, "wavecp_get_field")
    end subroutine

    subroutine wavecp_get_field_prev(sim, u_prev, ierr)
        type(wavecp_sim), intent(in) :: sim
        real(c_double), intent(out), contiguous :: u_prev(:)
        integer, intent(out), optional :: ierr
        call done(c_get_field_prev(sim%ptr, u_prev, size(u_prev, kind=c_int64_t)), ierr, &
                  "wavecp_get_field_prev")
    end subroutine

    !> Both time levels (now and one step earlier); collective.
    subroutine wavecp_set_field(sim, u, u_prev, ierr)
        type(wavecp_sim), intent(in) :: sim
        real(c_double), intent(in), contiguous :: u(:), u_prev(:)
        integer, intent(out), optional :: ierr
        integer(c_int) :: rc
        if (size(u) /= size(u_prev)) then
            rc = WAVECP_ERR_SIZE
            if (present(ierr)) then
                ierr = rc
            else
                error stop "wavecp_set_field: u and u_prev differ in size"
            end if
            return
        end if
        call done(c_set_field(sim%ptr, u, u_prev, size(u, kind=c_int64_t)), ierr, "wavecp_set_field")
    end subroutine

    !> How many of this rank's nodes lie on the boundary `tag` (name or number in the job).
    subroutine wavecp_boundary_count(sim, tag, n, ierr)
        type(wavecp_sim), intent(in) :: sim
        character(len=*), intent(in) :: tag
        integer(c_int64_t), intent(out) :: n
        integer, intent(out), optional :: ierr
        call done(c_boundary_nodes(sim%ptr, trim(tag)//c_null_char, c_null_ptr, 0_c_int64_t, n), &
                  ierr, "wavecp_boundary_count")
    end subroutine

    !> Their global ids (ids sized by wavecp_boundary_count).
    subroutine wavecp_boundary_nodes(sim, tag, ids, ierr)
        type(wavecp_sim), intent(in) :: sim
        character(len=*), intent(in) :: tag
        integer(c_int64_t), intent(out), contiguous, target :: ids(:)
        integer, intent(out), optional :: ierr
        integer(c_int64_t) :: n
        call done(c_boundary_nodes(sim%ptr, trim(tag)//c_null_char, c_loc(ids), &
                                   size(ids, kind=c_int64_t), n), ierr, "wavecp_boundary_nodes")
    end subroutine

    !> Dirichlet values for the next step on an `external` boundary, in wavecp_boundary_nodes order.
    subroutine wavecp_set_boundary_values(sim, tag, values, ierr)
        type(wavecp_sim), intent(in) :: sim
        character(len=*), intent(in) :: tag
        real(c_double), intent(in), contiguous :: values(:)
        integer, intent(out), optional :: ierr
        call done(c_set_boundary_values(sim%ptr, trim(tag)//c_null_char, values, &
                                        size(values, kind=c_int64_t)), ierr, "wavecp_set_boundary_values")
    end subroutine

    subroutine wavecp_num_receivers(sim, n, ierr)
        type(wavecp_sim), intent(in) :: sim
        integer(c_int64_t), intent(out) :: n
        integer, intent(out), optional :: ierr
        call done(c_num_receivers(sim%ptr, n), ierr, "wavecp_num_receivers")
    end subroutine

    !> Every receiver's value now; collective.
    subroutine wavecp_receivers(sim, values, ierr)
        type(wavecp_sim), intent(in) :: sim
        real(c_double), intent(out), contiguous :: values(:)
        integer, intent(out), optional :: ierr
        call done(c_receivers(sim%ptr, values, size(values, kind=c_int64_t)), ierr, "wavecp_receivers")
    end subroutine

    subroutine wavecp_state_size(sim, nbytes, ierr)
        type(wavecp_sim), intent(in) :: sim
        integer(c_int64_t), intent(out) :: nbytes
        integer, intent(out), optional :: ierr
        call done(c_state_size(sim%ptr, nbytes), ierr, "wavecp_state_size")
    end subroutine

    !> This rank's state into buf (sized by wavecp_state_size).
    subroutine wavecp_save_state(sim, buf, ierr)
        type(wavecp_sim), intent(in) :: sim
        integer(c_int8_t), intent(out), contiguous :: buf(:)
        integer, intent(out), optional :: ierr
        call done(c_save_state(sim%ptr, buf, size(buf, kind=c_int64_t)), ierr, "wavecp_save_state")
    end subroutine

    !> Continues bit for bit from a saved state of the same job; collective.
    subroutine wavecp_load_state(sim, buf, ierr)
        type(wavecp_sim), intent(in) :: sim
        integer(c_int8_t), intent(in), contiguous :: buf(:)
        integer, intent(out), optional :: ierr
        call done(c_load_state(sim%ptr, buf, size(buf, kind=c_int64_t)), ierr, "wavecp_load_state")
    end subroutine

    !> Appends the current step to the job's output file; collective.
    subroutine wavecp_write_output(sim, ierr)
        type(wavecp_sim), intent(in) :: sim
        integer, intent(out), optional :: ierr
        call done(c_write_output(sim%ptr), ierr, "wavecp_write_output")
    end subroutine

    !> Closes the output file under its final name; afterwards only queries work; collective.
    subroutine wavecp_finish(sim, ierr)
        type(wavecp_sim), intent(in) :: sim
        integer, intent(out), optional :: ierr
        call done(c_finish(sim%ptr), ierr, "wavecp_finish")
    end subroutine

    !> Frees the simulation (finishing its output) and nulls the handle.
    subroutine wavecp_destroy(sim)
        type(wavecp_sim), intent(inout) :: sim
        call c_destroy(sim%ptr)
        sim%ptr = c_null_ptr
    end subroutine

    !> Opens a model file (from `wavecp train`) on a device ("cpu", "cuda", "cuda:N", "auto").
    subroutine wavecp_net_open(net, model, device, ierr)
        type(wavecp_net), intent(out) :: net
        character(len=*), intent(in) :: model, device
        integer, intent(out), optional :: ierr
        call done(c_net_open(trim(model)//c_null_char, trim(device)//c_null_char, net%ptr), ierr, &
                  "wavecp_net_open")
    end subroutine

    !> The host's mesh, once: xy(2, npoints) and tris(3, ntris) with 0-based vertex numbers.
    subroutine wavecp_net_set_mesh(net, xy, tris, ierr)
        type(wavecp_net), intent(in) :: net
        real(c_double), intent(in), contiguous :: xy(:, :)
        integer(c_int64_t), intent(in), contiguous :: tris(:, :)
        integer, intent(out), optional :: ierr
        call done(c_net_set_mesh(net%ptr, xy, size(xy, 2, kind=c_int64_t), tris, &
                                 size(tris, 2, kind=c_int64_t)), ierr, "wavecp_net_set_mesh")
    end subroutine

    !> Frames a forecast reads and gives, and the time between frames.
    subroutine wavecp_net_frames(net, t_in, t_out, frame_dt, ierr)
        type(wavecp_net), intent(in) :: net
        integer(c_int64_t), intent(out) :: t_in, t_out
        real(c_double), intent(out) :: frame_dt
        integer, intent(out), optional :: ierr
        call done(c_net_frames(net%ptr, t_in, t_out, frame_dt), ierr, "wavecp_net_frames")
    end subroutine

    !> next(npoints, t_out) from past(npoints, t_in), oldest frame first; vertices outside the
    !> model's zone keep next's values.
    subroutine wavecp_net_forecast(net, past, next, ierr)
        type(wavecp_net), intent(in) :: net
        real(c_double), intent(in), contiguous :: past(:, :)
        real(c_double), intent(inout), contiguous :: next(:, :)
        integer, intent(out), optional :: ierr
        call done(c_net_forecast(net%ptr, past, size(past, kind=c_int64_t), next, &
                                 size(next, kind=c_int64_t)), ierr, "wavecp_net_forecast")
    end subroutine

    subroutine wavecp_net_destroy(net)
        type(wavecp_net), intent(inout) :: net
        call c_net_destroy(net%ptr)
        net%ptr = c_null_ptr
    end subroutine

end module wavecp
