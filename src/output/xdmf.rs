//! XDMF (v2/v3 syntax read by ParaView's "XDMF Reader") pointing into the VTKHDF datasets.

use super::{write_atomic, OutputError};
use std::fmt::Write;
use std::path::Path;

/// Writes the XDMF sidecar for `times.len()` steps of the field `u` stored back to back in
/// `/VTKHDF/PointData/u`. The topology is XDMF "Mixed" from `/wavecp/xdmf_topology`.
pub fn write_xdmf(
    xdmf_path: &Path,
    h5_name: &str,
    num_nodes: usize,
    num_cells: usize,
    topology_len: usize,
    times: &[f64],
) -> Result<(), OutputError> {
    let total = num_nodes * times.len();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<?xml version=\"1.0\" ?>\n<Xdmf Version=\"2.0\">\n <Domain>"
    );
    let _ = writeln!(
        s,
        "  <Topology Name=\"mesh\" TopologyType=\"Mixed\" NumberOfElements=\"{num_cells}\">"
    );
    let _ = writeln!(s, "   <DataItem Dimensions=\"{topology_len}\" NumberType=\"Int\" Precision=\"8\" Format=\"HDF\">{h5_name}:/wavecp/xdmf_topology</DataItem>\n  </Topology>");
    let _ = writeln!(s, "  <Geometry Name=\"points\" GeometryType=\"XYZ\">");
    let _ = writeln!(s, "   <DataItem Dimensions=\"{num_nodes} 3\" NumberType=\"Float\" Precision=\"8\" Format=\"HDF\">{h5_name}:/VTKHDF/Points</DataItem>\n  </Geometry>");
    let _ = writeln!(
        s,
        "  <Grid Name=\"wavecp\" GridType=\"Collection\" CollectionType=\"Temporal\">"
    );
    for (k, t) in times.iter().enumerate() {
        let _ = writeln!(
            s,
            "   <Grid Name=\"step{k}\" GridType=\"Uniform\">\n    <Time Value=\"{t:.17e}\"/>"
        );
        let _ = writeln!(s, "    <Topology Reference=\"XML\">/Xdmf/Domain/Topology[1]</Topology>\n    <Geometry Reference=\"XML\">/Xdmf/Domain/Geometry[1]</Geometry>");
        let _ = writeln!(
            s,
            "    <Attribute Name=\"u\" AttributeType=\"Scalar\" Center=\"Node\">"
        );
        let _ = writeln!(
            s,
            "     <DataItem ItemType=\"HyperSlab\" Dimensions=\"{num_nodes}\" Type=\"HyperSlab\">"
        );
        let _ = writeln!(
            s,
            "      <DataItem Dimensions=\"3 1\" Format=\"XML\">{} 1 {num_nodes}</DataItem>",
            k * num_nodes
        );
        let _ = writeln!(s, "      <DataItem Dimensions=\"{total}\" NumberType=\"Float\" Precision=\"8\" Format=\"HDF\">{h5_name}:/VTKHDF/PointData/u</DataItem>");
        let _ = writeln!(s, "     </DataItem>\n    </Attribute>");
        let _ = writeln!(
            s,
            "    <Attribute Name=\"region\" AttributeType=\"Scalar\" Center=\"Cell\">"
        );
        let _ = writeln!(s, "     <DataItem Dimensions=\"{num_cells}\" NumberType=\"Int\" Precision=\"4\" Format=\"HDF\">{h5_name}:/VTKHDF/CellData/region</DataItem>\n    </Attribute>");
        let _ = writeln!(
            s,
            "    <Attribute Name=\"partition\" AttributeType=\"Scalar\" Center=\"Cell\">"
        );
        let _ = writeln!(s, "     <DataItem Dimensions=\"{num_cells}\" NumberType=\"Int\" Precision=\"4\" Format=\"HDF\">{h5_name}:/VTKHDF/CellData/partition</DataItem>\n    </Attribute>");
        let _ = writeln!(s, "   </Grid>");
    }
    let _ = writeln!(s, "  </Grid>\n </Domain>\n</Xdmf>");
    write_atomic(xdmf_path, s.as_bytes())
}
