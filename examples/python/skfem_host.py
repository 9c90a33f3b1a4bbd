"""scikit-fem as the host FE code, wavecp as its zone model (the paper's submodel setting, with
a real FE code in place of the network).

The host solves the acoustic wave equation u_tt = Δu on the whole domain Ω = [0, 2] × [0, 1]
with its own assembly (P1 triangles, lumped mass, central differences, natural boundaries), from
a Gaussian pulse at (0.5, 0.5). wavecp solves only the zone Z = [1, 2] × [0, 1] on its own mesh,
its side x = 1 declared `external`: each step the host hands wavecp its interface values at the
new time level through the Python bindings, then wavecp takes the step. The zone field wavecp
computes is compared with the host's own solution on Z; they agree to the discretisation error
(the two codes triangulate the squares along different diagonals), which shrinks as h² — the
test runs two resolutions and checks that rate.

    python3 examples/python/skfem_host.py [n] [--matching] [--out zone.vtkhdf]
n: cells per unit length (default 40); --matching: the host meshes Ω as wavecp's generator does,
so the zone fields must agree to rounding (a check of the coupling itself); --out: wavecp's zone
output for ParaView. Prints one JSON line: the zone error at the end and its maximum over time
(relative L2 over the zone's nodes).
"""

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import scipy.sparse.linalg as sla
import skfem
from skfem.models.poisson import laplace, mass

import wavecp

T_END = 1.5


def host_mesh(n, matching):
    """scikit-fem's own triangulation of Ω (every square cut along one diagonal), or, with
    `matching`, the one wavecp's generator makes (alternating diagonals), so that on Z the two
    codes discretise the same problem and differ only by rounding."""
    if not matching:
        return skfem.MeshTri.init_tensor(np.linspace(0.0, 2.0, 2 * n + 1), np.linspace(0.0, 1.0, n + 1))
    nx, ny = 2 * n, n
    i, j = np.meshgrid(np.arange(nx + 1), np.arange(ny + 1))
    p = np.vstack([2.0 * i.ravel() / nx, j.ravel() / ny])
    tris = []
    for jj in range(ny):
        for ii in range(nx):
            a, b = jj * (nx + 1) + ii, jj * (nx + 1) + ii + 1
            c, d = b + nx + 1, a + nx + 1
            tris += [[a, b, c], [a, c, d]] if (ii + jj) % 2 == 0 else [[a, b, d], [b, c, d]]
    return skfem.MeshTri(np.ascontiguousarray(p), np.ascontiguousarray(np.array(tris).T))


def host_model(n, matching):
    """The host's whole model: mesh, stiffness, lumped mass, initial field."""
    m = host_mesh(n, matching)
    basis = skfem.Basis(m, skfem.ElementTriP1())
    k = laplace.assemble(basis).tocsr()
    lumped = np.asarray(mass.assemble(basis).sum(axis=1)).ravel()
    x, y = m.p
    u0 = np.exp(-((x - 0.5) ** 2 + (y - 0.5) ** 2) / 0.1**2)
    return m, k, lumped, u0, lambda_max(k, lumped)


def lambda_max(k, lumped):
    """λ_max(M⁻¹K), the bound of the stable step dt < 2 / sqrt(λ_max), from M^-1/2 K M^-1/2."""
    d = 1.0 / np.sqrt(lumped)
    a = k.multiply(d[:, None]).multiply(d[None, :]).tocsr()
    return float(sla.eigsh(a, k=1, which="LA", return_eigenvectors=False)[0])


def zone_job(n, dt, out, folder):
    """wavecp's zone model: its own mesh of Z, the interface side external."""
    p = Path(folder) / "zone.toml"
    p.write_text(
        f"""[mesh.generate]
shape = "tri"
nx = {n}
ny = {n}
x = [1.0, 2.0]
y = [0.0, 1.0]

[[boundary]]
tags = ["left"]
kind = "external"

[time]
end = {T_END}
dt = {dt!r}

[output]
path = "{out}"
every = 20
"""
    )
    return p


def run(n, matching=False, out=""):
    m, k, lumped, u0, lam = host_model(n, matching)
    dt = float(0.8 * 2.0 / np.sqrt(lam))
    with tempfile.TemporaryDirectory() as folder, wavecp.Sim(zone_job(n, dt, out, folder)) as zone:
        # Where the zone's nodes and interface nodes are in the host's mesh (the grids share
        # their vertices on Z: a lookup by coordinates, no interpolation).
        def host_index(xy):
            key = {(round(a * n), round(b * n)): i for i, (a, b) in enumerate(m.p.T)}
            return np.array([key[(round(a * n), round(b * n))] for a, b in xy])

        xy = zone.coords()
        on_zone = host_index(xy)
        ids = zone.node_ids()
        iface = host_index(xy[np.searchsorted(ids, zone.boundary_nodes("left"))])
        steps = int(round(T_END / dt))
        u = u0.copy()
        u_prev = u0 - 0.5 * dt**2 * (k @ u0) / lumped  # Taylor start, zero velocity
        worst, norm = 0.0, 0.0
        if out:
            zone.write_output()
        for step in range(steps):
            u_next = 2.0 * u - u_prev - dt**2 * (k @ u) / lumped  # the host's own step
            u_prev, u = u, u_next
            zone.set_boundary_values("left", u[iface])  # the host drives wavecp's interface
            zone.advance(1)
            if out and (step + 1) % 20 == 0:
                zone.write_output()
            if (step + 1) % 10 == 0 or step + 1 == steps:
                ref = u[on_zone]
                worst = max(worst, float(np.linalg.norm(zone.field() - ref)))
                norm = max(norm, float(np.linalg.norm(ref)))
        ref = u[on_zone]
        final = float(np.linalg.norm(zone.field() - ref) / np.linalg.norm(ref))
        return {
            "n": n,
            "host_mesh": "matching" if matching else "scikit-fem",
            "host_nodes": int(m.p.shape[1]),
            "zone_nodes": int(ids.size),
            "steps": steps,
            "dt": dt,
            "final_rel_l2": final,
            "max_rel_l2": worst / norm,
            "zone_peak": float(np.abs(ref).max()),
        }


if __name__ == "__main__":
    args = sys.argv[1:]
    out = args[args.index("--out") + 1] if "--out" in args else ""
    numbers = [a for a in args if a.isdigit()]
    print(json.dumps(run(int(numbers[0]) if numbers else 40, "--matching" in args, out)))
