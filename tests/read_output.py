"""Reads a wavecp output file with VTK's own readers and prints what they see as JSON.

Used by tests/output.rs: vtkHDFReader (ParaView >= 5.12's reader) on the .vtkhdf file and
vtkXdmfReader (ParaView 5.10/5.11's "XDMF Reader") on the .xdmf sidecar, plus h5py for the
receiver traces and energy history stored next to the VTK data.
"""
import json
import sys

import h5py
from vtkmodules.util.numpy_support import vtk_to_numpy
from vtkmodules.vtkCommonExecutionModel import vtkStreamingDemandDrivenPipeline as SDDP
from vtkmodules.vtkIOHDF import vtkHDFReader
from vtkmodules.vtkIOXdmf2 import vtkXdmfReader


def series(reader, set_time):
    reader.UpdateInformation()
    times = list(reader.GetOutputInformation(0).Get(SDDP.TIME_STEPS()) or [])
    steps = []
    for k, t in enumerate(times):
        out = set_time(k, t)
        steps.append({
            "npoints": out.GetNumberOfPoints(),
            "ncells": out.GetNumberOfCells(),
            "cell_types": sorted({out.GetCellType(i) for i in range(out.GetNumberOfCells())}),
            "u": vtk_to_numpy(out.GetPointData().GetArray("u")).tolist(),
            "region": vtk_to_numpy(out.GetCellData().GetArray("region")).tolist(),
            "partition": vtk_to_numpy(out.GetCellData().GetArray("partition")).tolist(),
        })
    return {"times": times, "steps": steps}


def main(path):
    h = vtkHDFReader()
    h.SetFileName(path)

    def hdf_step(k, _t):
        h.SetStep(k)
        h.Update()
        return h.GetOutput()

    result = {"vtkhdf": series(h, hdf_step)}
    xpath = path.rsplit(".", 1)[0] + ".xdmf"
    x = vtkXdmfReader()
    x.SetFileName(xpath)

    def xdmf_step(_k, t):
        x.UpdateTimeStep(t)
        return x.GetOutputDataObject(0)

    result["xdmf"] = series(x, xdmf_step)
    with h5py.File(path, "r") as f:
        result["receivers"] = f["wavecp/receivers/u"][...].tolist()
        result["receiver_time"] = f["wavecp/receivers/time"][...].tolist()
        result["energy"] = f["wavecp/energy"][...].tolist()
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
