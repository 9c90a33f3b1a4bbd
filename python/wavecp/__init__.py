"""wavecp from Python: a wavecp simulation stepped by the calling program, numpy arrays in and
out.

A thin ctypes layer over the C ABI (include/wavecp.h, libwavecp_c): the same library, call
order rules, status codes and bits as C and Fortran hosts. A failed call raises `WavecpError`
with wavecp's message.

    import wavecp
    with wavecp.Sim("jobs/square_dirichlet.toml", set=["time.end=0.5"]) as sim:
        sim.advance(10)
        u = sim.field()           # numpy array over this rank's nodes
        ids = sim.node_ids()      # their mesh numbers
"""

import ctypes
import json
import os
from pathlib import Path

import numpy as np

__all__ = ["Net", "Sim", "WavecpError", "abi_version", "library_path"]

ABI_MAJOR = 1

_f64p = np.ctypeslib.ndpointer(dtype=np.float64, flags="C_CONTIGUOUS")
_i64p = np.ctypeslib.ndpointer(dtype=np.int64, flags="C_CONTIGUOUS")
_u8p = np.ctypeslib.ndpointer(dtype=np.uint8, flags="C_CONTIGUOUS")
_sim = ctypes.c_void_p
_i64 = ctypes.c_int64


def library_path():
    """Where libwavecp_c is loaded from: $WAVECP_LIB, else the copy inside this package, else
    the build tree of the repository this file sits in (running from a checkout)."""
    env = os.environ.get("WAVECP_LIB")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent
    for p in (here / "libwavecp_c.so", here.parent.parent / "target" / "release" / "libwavecp_c.so"):
        if p.exists():
            return p
    raise ImportError(
        "libwavecp_c.so not found: install with `pip install ./python` from the wavecp repository, "
        "or build it (cargo build --release -p wavecp-capi) and set WAVECP_LIB to its path"
    )


_lib = ctypes.CDLL(str(library_path()))
_SIGNATURES = {
    "wavecp_abi_version": (ctypes.c_uint32, []),
    "wavecp_last_error": (ctypes.c_char_p, []),
    "wavecp_status_name": (ctypes.c_char_p, [ctypes.c_int]),
    "wavecp_sim_create": (ctypes.c_int, [ctypes.c_char_p, ctypes.POINTER(_sim)]),
    "wavecp_sim_create_mpi": (ctypes.c_int, [ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(_sim)]),
    "wavecp_sim_set": (ctypes.c_int, [_sim, ctypes.c_char_p]),
    "wavecp_sim_advance": (ctypes.c_int, [_sim, _i64]),
    "wavecp_sim_time": (ctypes.c_int, [_sim, ctypes.POINTER(ctypes.c_double)]),
    "wavecp_sim_dt": (ctypes.c_int, [_sim, ctypes.POINTER(ctypes.c_double)]),
    "wavecp_sim_step": (ctypes.c_int, [_sim, ctypes.POINTER(_i64)]),
    "wavecp_sim_num_steps": (ctypes.c_int, [_sim, ctypes.POINTER(_i64)]),
    "wavecp_sim_num_nodes": (ctypes.c_int, [_sim, ctypes.POINTER(_i64)]),
    "wavecp_sim_node_ids": (ctypes.c_int, [_sim, _i64p, _i64]),
    "wavecp_sim_coords": (ctypes.c_int, [_sim, _f64p, _i64]),
    "wavecp_sim_get_field": (ctypes.c_int, [_sim, _f64p, _i64]),
    "wavecp_sim_get_field_prev": (ctypes.c_int, [_sim, _f64p, _i64]),
    "wavecp_sim_set_field": (ctypes.c_int, [_sim, _f64p, _f64p, _i64]),
    "wavecp_sim_boundary_nodes": (ctypes.c_int, [_sim, ctypes.c_char_p, ctypes.c_void_p, _i64, ctypes.POINTER(_i64)]),
    "wavecp_sim_set_boundary_values": (ctypes.c_int, [_sim, ctypes.c_char_p, _f64p, _i64]),
    "wavecp_sim_num_receivers": (ctypes.c_int, [_sim, ctypes.POINTER(_i64)]),
    "wavecp_sim_receivers": (ctypes.c_int, [_sim, _f64p, _i64]),
    "wavecp_sim_state_size": (ctypes.c_int, [_sim, ctypes.POINTER(_i64)]),
    "wavecp_sim_save_state": (ctypes.c_int, [_sim, _u8p, _i64]),
    "wavecp_sim_load_state": (ctypes.c_int, [_sim, _u8p, _i64]),
    "wavecp_sim_write_output": (ctypes.c_int, [_sim]),
    "wavecp_sim_finish": (ctypes.c_int, [_sim]),
    "wavecp_sim_destroy": (None, [_sim]),
    "wavecp_sim_hybrid_windows": (ctypes.c_int, [_sim, ctypes.POINTER(_i64), ctypes.POINTER(_i64), ctypes.POINTER(_i64)]),
    "wavecp_sim_submodel_windows": (ctypes.c_int, [_sim, ctypes.POINTER(_i64), ctypes.POINTER(ctypes.c_double)]),
    "wavecp_sim_summary_json": (ctypes.c_int, [_sim, ctypes.c_char_p, _i64, ctypes.POINTER(_i64)]),
    "wavecp_net_open": (ctypes.c_int, [ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(_sim)]),
    "wavecp_net_set_zone": (ctypes.c_int, [_sim] + [ctypes.c_double] * 4),
    "wavecp_net_set_mesh": (ctypes.c_int, [_sim, _f64p, _i64, _i64p, _i64]),
    "wavecp_net_frames": (ctypes.c_int, [_sim, ctypes.POINTER(_i64), ctypes.POINTER(_i64), ctypes.POINTER(ctypes.c_double)]),
    "wavecp_net_covered": (ctypes.c_int, [_sim, ctypes.POINTER(_i64)]),
    "wavecp_net_set_scenario": (ctypes.c_int, [_sim, _f64p, _i64]),
    "wavecp_net_set_time": (ctypes.c_int, [_sim, ctypes.c_double]),
    "wavecp_net_forecast": (ctypes.c_int, [_sim, _f64p, _i64, _f64p, _i64]),
    "wavecp_net_destroy": (None, [_sim]),
}
for _name, (_res, _args) in _SIGNATURES.items():
    _fn = getattr(_lib, _name)
    _fn.restype, _fn.argtypes = _res, _args


class WavecpError(RuntimeError):
    """A failed wavecp call: `code` is its status code, `name` the code's name."""

    def __init__(self, call, code, msg=None):
        self.code = code
        self.name = _lib.wavecp_status_name(code).decode()
        if msg is None:
            msg = _lib.wavecp_last_error().decode(errors="replace")
        super().__init__(f"{call}: {self.name}: {msg}")


def _check(call, rc):
    if rc != 0:
        raise WavecpError(call, rc)


def abi_version():
    """The loaded library's ABI version as (major, minor, patch)."""
    v = _lib.wavecp_abi_version()
    return (v // 10000, v // 100 % 100, v % 100)


if abi_version()[0] != ABI_MAJOR:
    raise ImportError(f"{library_path()} has ABI {abi_version()}, this package needs {ABI_MAJOR}.x")


def _fortran_comm(comm):
    """An mpi4py communicator or a Fortran handle as the integer the C ABI takes."""
    return comm.py2f() if hasattr(comm, "py2f") else int(comm)


class _Handle:
    """A wavecp handle: its calls, and its destruction by `close`, `with` or the collector.
    Subclasses name the C function that frees it (`_destroy`) and what it is (`_what`)."""

    _h = None

    def _call(self, name, *args):
        if self._h is None:
            raise WavecpError(name, 2, f"the {self._what} was closed")
        _check(name, getattr(_lib, name)(self._h, *args))

    def close(self):
        """Frees the handle; further calls raise WavecpError."""
        if self._h is not None:
            getattr(_lib, self._destroy)(self._h)
            self._h = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class Sim(_Handle):
    """A simulation of a wavecp job file. `set` overrides job keys (as `wavecp --set`);
    `comm` (an mpi4py communicator, or its Fortran handle) runs it on those MPI ranks, which
    then make the collective calls together. Arrays hold this rank's nodes in `node_ids()`
    order. `close` finishes its output first."""

    _destroy, _what = "wavecp_sim_destroy", "simulation"

    def __init__(self, job, set=(), comm=None):
        h = _sim()
        path = str(job).encode()
        if comm is None:
            _check("wavecp_sim_create", _lib.wavecp_sim_create(path, ctypes.byref(h)))
        else:
            _check("wavecp_sim_create_mpi", _lib.wavecp_sim_create_mpi(path, _fortran_comm(comm), ctypes.byref(h)))
        self._h = h
        for kv in set:
            self.set(kv)

    def _get(self, name, ctype):
        v = ctype()
        self._call(name, ctypes.byref(v))
        return v.value

    def set(self, key_equals_value):
        """Overrides a job key (before the first advance, query or output call)."""
        self._call("wavecp_sim_set", key_equals_value.encode())

    def advance(self, steps=1):
        self._call("wavecp_sim_advance", int(steps))

    @property
    def time(self):
        return self._get("wavecp_sim_time", ctypes.c_double)

    @property
    def dt(self):
        return self._get("wavecp_sim_dt", ctypes.c_double)

    @property
    def step(self):
        return self._get("wavecp_sim_step", _i64)

    @property
    def num_steps(self):
        """The job's number of steps (to time.end)."""
        return self._get("wavecp_sim_num_steps", _i64)

    @property
    def num_nodes(self):
        return self._get("wavecp_sim_num_nodes", _i64)

    def node_ids(self):
        out = np.empty(self.num_nodes, dtype=np.int64)
        self._call("wavecp_sim_node_ids", out, out.size)
        return out

    def coords(self):
        """(n, 2) array of this rank's node coordinates."""
        n = self.num_nodes
        out = np.empty((n, 2), dtype=np.float64)
        self._call("wavecp_sim_coords", out, n)
        return out

    def field(self):
        """A copy of the field now."""
        out = np.empty(self.num_nodes, dtype=np.float64)
        self._call("wavecp_sim_get_field", out, out.size)
        return out

    def field_prev(self):
        """A copy of the field one step earlier."""
        out = np.empty(self.num_nodes, dtype=np.float64)
        self._call("wavecp_sim_get_field_prev", out, out.size)
        return out

    def set_field(self, u, u_prev):
        u = np.ascontiguousarray(u, dtype=np.float64)
        u_prev = np.ascontiguousarray(u_prev, dtype=np.float64)
        if u.shape != u_prev.shape:
            raise ValueError(f"u has shape {u.shape}, u_prev {u_prev.shape}")
        self._call("wavecp_sim_set_field", u, u_prev, u.size)

    def boundary_nodes(self, tag):
        """Global ids of this rank's nodes on a boundary of the job (name or number)."""
        n = _i64()
        self._call("wavecp_sim_boundary_nodes", str(tag).encode(), None, 0, ctypes.byref(n))
        out = np.empty(n.value, dtype=np.int64)
        self._call("wavecp_sim_boundary_nodes", str(tag).encode(), out.ctypes.data, out.size, ctypes.byref(n))
        return out

    def set_boundary_values(self, tag, values):
        """Dirichlet values for the next step on an `external` boundary, in boundary_nodes order."""
        v = np.ascontiguousarray(values, dtype=np.float64)
        self._call("wavecp_sim_set_boundary_values", str(tag).encode(), v, v.size)

    def receivers(self):
        """Every receiver's value now (collective)."""
        n = self._get("wavecp_sim_num_receivers", _i64)
        out = np.empty(n, dtype=np.float64)
        self._call("wavecp_sim_receivers", out, n)
        return out

    def save_state(self):
        """This rank's state as bytes (see load_state)."""
        n = self._get("wavecp_sim_state_size", _i64)
        buf = np.empty(n, dtype=np.uint8)
        self._call("wavecp_sim_save_state", buf, n)
        return buf.tobytes()

    def load_state(self, state):
        """Continues bit for bit from save_state's bytes of a simulation of the same job."""
        buf = np.frombuffer(state, dtype=np.uint8).copy()
        self._call("wavecp_sim_load_state", buf, buf.size)

    def hybrid_windows(self):
        """A hybrid job's (accepted, rejected, steps replaced by the network) so far."""
        a, r, k = _i64(), _i64(), _i64()
        self._call("wavecp_sim_hybrid_windows", ctypes.byref(a), ctypes.byref(r), ctypes.byref(k))
        return a.value, r.value, k.value

    def submodel_windows(self):
        """A submodel job's (windows done, the latest window's indicator)."""
        w, ind = _i64(), ctypes.c_double()
        self._call("wavecp_sim_submodel_windows", ctypes.byref(w), ctypes.byref(ind))
        return w.value, ind.value

    def summary(self):
        """Where the run stands, as a dict: mode, step, time, dt, job_steps, finished, and for a
        hybrid job `hybrid` (windows with their scores, threshold, out_of_range, wall-clock
        split, ...), for a submodel job `submodel` (windows, indicator)."""
        n = _i64()
        self._call("wavecp_sim_summary_json", None, 0, ctypes.byref(n))
        buf = ctypes.create_string_buffer(n.value + 1)
        self._call("wavecp_sim_summary_json", buf, n.value + 1, ctypes.byref(n))
        return json.loads(buf.value.decode("utf-8"))

    def write_output(self):
        """Appends the current step to the job's output file (collective)."""
        self._call("wavecp_sim_write_output")

    def finish(self):
        """Closes the output file under its final name; afterwards only queries work."""
        self._call("wavecp_sim_finish")


class Net(_Handle):
    """A trained wavecp network (a model file from `wavecp train`) forecasting frames at the
    host's own vertices. `points` (n, 2) and `triangles` (m, 3, 0-based) are the host's mesh,
    given once; `zone` (x0, x1, y0, y1) places the model's grid (default: the zone its file
    records); `device` is "cpu", "cuda", "cuda:N" or "auto"."""

    _destroy, _what = "wavecp_net_destroy", "network"

    def __init__(self, model, points, triangles, device="cpu", zone=None):
        h = _sim()
        _check("wavecp_net_open", _lib.wavecp_net_open(str(model).encode(), device.encode(), ctypes.byref(h)))
        self._h = h
        try:
            if zone is not None:
                self._call("wavecp_net_set_zone", *[float(v) for v in zone])
            xy = np.ascontiguousarray(points, dtype=np.float64).reshape(-1, 2)
            tris = np.ascontiguousarray(triangles, dtype=np.int64).reshape(-1, 3)
            self._call("wavecp_net_set_mesh", xy, xy.shape[0], tris, tris.shape[0])
        except Exception:
            self.close()
            raise
        self.npoints = xy.shape[0]
        t_in, t_out, fdt = _i64(), _i64(), ctypes.c_double()
        self._call("wavecp_net_frames", ctypes.byref(t_in), ctypes.byref(t_out), ctypes.byref(fdt))
        self.t_in, self.t_out, self.frame_dt = t_in.value, t_out.value, fdt.value

    @property
    def covered(self):
        """How many of the host's vertices lie in the model's zone."""
        n = _i64()
        self._call("wavecp_net_covered", ctypes.byref(n))
        return n.value

    def set_scenario(self, params):
        p = np.ascontiguousarray(params, dtype=np.float64)
        self._call("wavecp_net_set_scenario", p, p.size)

    def set_time(self, t0):
        """Time of the next forecast's first input frame (models conditioned on time)."""
        self._call("wavecp_net_set_time", float(t0))

    def forecast(self, past, out=None):
        """(t_out, n) frames from the last (t_in, n) frames, oldest first. Vertices outside the
        zone keep `out`'s values (zeros when `out` is not given)."""
        past = np.ascontiguousarray(past, dtype=np.float64)
        if past.shape != (self.t_in, self.npoints):
            raise ValueError(f"past has shape {past.shape}, the network reads {(self.t_in, self.npoints)}")
        if out is None:
            out = np.zeros((self.t_out, self.npoints))
        elif out.shape != (self.t_out, self.npoints) or out.dtype != np.float64 or not out.flags.c_contiguous:
            raise ValueError(f"out must be a C-contiguous float64 array of shape {(self.t_out, self.npoints)}")
        self._call("wavecp_net_forecast", past, past.size, out, out.size)
        return out
