"""Reads a wavecp output file with VTK's own readers and prints what they see as JSON.

Used by tests/output.rs: vtkHDFReader (ParaView >= 5.12's reader) on the .vtkhdf file and
vtkXdmfReader (ParaView 5.10/5.11's "XDMF Reader") on the .xdmf sidecar, plus h5py for the
receiver traces, the energy history and the `units`/`description` attributes.

    read_output.py FILE.vtkhdf [--steps K1,K2,...]   (only those steps; negative from the end)
"""
import json
import sys

import h5py
from vtkmodules.util.numpy_support import vtk_to_numpy
from vtkmodules.vtkCommonExecutionModel import vtkStreamingDemandDrivenPipeline as SDDP
from vtkmodules.vtkIOHDF import vtkHDFReader
from vtkmodules.vtkIOXdmf2 import vtkXdmfReader


def series(reader, set_time, only=None):
    reader.UpdateInformation()
    times = list(reader.GetOutputInformation(0).Get(SDDP.TIME_STEPS()) or [])
    steps = []
    for k, t in enumerate(times):
        if only is not None and k not in only:
            continue
        out = set_time(k, t)
        steps.append({
            "index": k,
            "npoints": out.GetNumberOfPoints(),
            "ncells": out.GetNumberOfCells(),
            "cell_types": sorted({out.GetCellType(i) for i in range(out.GetNumberOfCells())}),
            "u": vtk_to_numpy(out.GetPointData().GetArray("u")).tolist(),
            "region": vtk_to_numpy(out.GetCellData().GetArray("region")).tolist(),
            "partition": vtk_to_numpy(out.GetCellData().GetArray("partition")).tolist(),
        })
    return {"times": times, "steps": steps}


def main(path, only=None):
    h = vtkHDFReader()
    h.SetFileName(path)

    def hdf_step(k, _t):
        h.SetStep(k)
        h.Update()
        return h.GetOutput()

    h.UpdateInformation()
    n = len(h.GetOutputInformation(0).Get(SDDP.TIME_STEPS()) or [])
    if only is not None:
        only = {k % n for k in only} if n else set()
    result = {"vtkhdf": series(h, hdf_step, only)}
    xpath = path.rsplit(".", 1)[0] + ".xdmf"
    x = vtkXdmfReader()
    x.SetFileName(xpath)

    def xdmf_step(_k, t):
        x.UpdateTimeStep(t)
        return x.GetOutputDataObject(0)

    result["xdmf"] = series(x, xdmf_step, only)
    with h5py.File(path, "r") as f:
        u = f["VTKHDF/PointData/u"]
        npts = int(f["VTKHDF/NumberOfPoints"][0])
        if only is not None:
            result["hdf5_u"] = {k: u[k * npts:(k + 1) * npts].tolist() for k in sorted(only)}
        else:
            result["receivers"] = f["wavecp/receivers/u"][...].tolist()
            result["receiver_time"] = f["wavecp/receivers/time"][...].tolist()
            result["energy"] = f["wavecp/energy"][...].tolist()
        attrs = {}

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and "units" in obj.attrs:
                attrs[name] = [str(obj.attrs["units"]), str(obj.attrs["description"])]

        f.visititems(visit)
        result["attrs"] = attrs
    print(json.dumps(result))


if __name__ == "__main__":
    steps = None
    if len(sys.argv) > 3 and sys.argv[2] == "--steps":
        steps = [int(k) for k in sys.argv[3].split(",")]
    main(sys.argv[1], steps)
