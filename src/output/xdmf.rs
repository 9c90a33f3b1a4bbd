//! XDMF sidecar pointing into the VTKHDF datasets, readable by ParaView's "XDMF Reader"
//! (Xdmf2, `vtkXdmfReader`) and its "Xdmf3 Reader" (`vtkXdmf3Reader`, libxdmf3) alike.
//!
//! Why it looks the way it does:
//! - every step carries its own `Topology` and `Geometry` (pointing at the same HDF5 datasets):
//!   the Xdmf3 readers abort on `Reference="XML"` links;
//! - every integer item states `NumberType="Int" Precision="8"`: an untyped item is read as
//!   32-bit floats, so hyperslab offsets past 2²⁴ values would round to a neighbouring node;
//! - steps are appended in place (the closing tags overwritten by one write of the new step and
//!   the closing tags), so a run of `K` output steps writes O(K) bytes, not O(K²).

use super::{write_atomic, OutputError};
use std::fmt::Write as _;
use std::io::{Seek, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

const FOOTER: &str = "  </Grid>\n </Domain>\n</Xdmf>\n";

/// What the sidecar describes: the HDF5 file (by name, relative to the sidecar) and sizes.
#[derive(Debug, Clone)]
pub struct XdmfLayout {
    pub h5_name: String,
    pub num_nodes: usize,
    pub num_cells: usize,
    pub topology_len: usize,
    /// Point fields stored beside `u` (`/VTKHDF/PointData/NAME`, steps back to back).
    pub fields: Vec<String>,
}

/// An XDMF sidecar open for appending steps.
pub struct XdmfSeries {
    path: PathBuf,
    layout: XdmfLayout,
    file: std::fs::File,
    steps: usize,
}

fn header(l: &XdmfLayout) -> String {
    format!(
        "<?xml version=\"1.0\" ?>\n\
         <!-- wavecp output: the field u per step, stored in {h5} (VTKHDF). Opens in ParaView with\n     \
         \"XDMF Reader\" or \"Xdmf3 Reader\"; ParaView >= 5.12 opens {h5} itself. -->\n\
         <Xdmf Version=\"3.0\">\n <Domain>\n  \
         <Grid Name=\"wavecp\" GridType=\"Collection\" CollectionType=\"Temporal\">\n",
        h5 = l.h5_name
    )
}

/// The XML of output step `k` at time `t`.
fn step_xml(l: &XdmfLayout, k: usize, t: f64) -> String {
    let XdmfLayout {
        h5_name: h5,
        num_nodes: n,
        num_cells: nc,
        topology_len: tl,
        fields,
    } = l;
    // The u dataset as the reader sees it: at least up to the end of this step.
    let total = (k + 1) * n;
    let start = k * n;
    let mut s = String::with_capacity(1600);
    let _ = write!(
        s,
        "   <Grid Name=\"step{k}\" GridType=\"Uniform\">\n    <Time Value=\"{t:.17e}\"/>\n    \
         <Topology TopologyType=\"Mixed\" NumberOfElements=\"{nc}\">\n     \
         <DataItem Dimensions=\"{tl}\" NumberType=\"Int\" Precision=\"8\" Format=\"HDF\">{h5}:/wavecp/xdmf_topology</DataItem>\n    \
         </Topology>\n    <Geometry GeometryType=\"XYZ\">\n     \
         <DataItem Dimensions=\"{n} 3\" NumberType=\"Float\" Precision=\"8\" Format=\"HDF\">{h5}:/VTKHDF/Points</DataItem>\n    \
         </Geometry>\n    <Attribute Name=\"u\" AttributeType=\"Scalar\" Center=\"Node\">\n     \
         <DataItem ItemType=\"HyperSlab\" Dimensions=\"{n}\" Type=\"HyperSlab\">\n      \
         <DataItem Dimensions=\"3 1\" NumberType=\"Int\" Precision=\"8\" Format=\"XML\">{start} 1 {n}</DataItem>\n      \
         <DataItem Dimensions=\"{total}\" NumberType=\"Float\" Precision=\"8\" Format=\"HDF\">{h5}:/VTKHDF/PointData/u</DataItem>\n     \
         </DataItem>\n    </Attribute>\n"
    );
    for name in fields {
        let _ = write!(
            s,
            "    <Attribute Name=\"{name}\" AttributeType=\"Scalar\" Center=\"Node\">\n     \
             <DataItem ItemType=\"HyperSlab\" Dimensions=\"{n}\" Type=\"HyperSlab\">\n      \
             <DataItem Dimensions=\"3 1\" NumberType=\"Int\" Precision=\"8\" Format=\"XML\">{start} 1 {n}</DataItem>\n      \
             <DataItem Dimensions=\"{total}\" NumberType=\"Float\" Precision=\"8\" Format=\"HDF\">{h5}:/VTKHDF/PointData/{name}</DataItem>\n     \
             </DataItem>\n    </Attribute>\n"
        );
    }
    for name in ["region", "partition"] {
        let _ = write!(
            s,
            "    <Attribute Name=\"{name}\" AttributeType=\"Scalar\" Center=\"Cell\">\n     \
             <DataItem Dimensions=\"{nc}\" NumberType=\"Int\" Precision=\"4\" Format=\"HDF\">{h5}:/VTKHDF/CellData/{name}</DataItem>\n    \
             </Attribute>\n"
        );
    }
    s.push_str("   </Grid>\n");
    s
}

/// The whole document for `times`.
pub fn xdmf_text(l: &XdmfLayout, times: &[f64]) -> String {
    let mut s = header(l);
    for (k, &t) in times.iter().enumerate() {
        s.push_str(&step_xml(l, k, t));
    }
    s.push_str(FOOTER);
    s
}

impl XdmfSeries {
    /// Writes the sidecar for the steps `times` (replacing any old file as a whole, through a
    /// temporary file and a rename) and keeps it open for appending.
    pub fn create(path: &Path, layout: XdmfLayout, times: &[f64]) -> Result<Self, OutputError> {
        write_atomic(path, xdmf_text(&layout, times).as_bytes())?;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|source| OutputError::Io {
                file: path.to_path_buf(),
                source,
            })?;
        Ok(XdmfSeries {
            path: path.to_path_buf(),
            layout,
            file,
            steps: times.len(),
        })
    }

    /// Appends step `steps()` at time `t`: one write of the step and the closing tags over the
    /// old closing tags.
    pub fn append(&mut self, t: f64) -> Result<(), OutputError> {
        let io = |source| OutputError::Io {
            file: self.path.clone(),
            source,
        };
        let mut block = step_xml(&self.layout, self.steps, t);
        block.push_str(FOOTER);
        let end = self.file.seek(SeekFrom::End(0)).map_err(io)?;
        self.file
            .seek(SeekFrom::Start(end.saturating_sub(FOOTER.len() as u64)))
            .map_err(io)?;
        self.file.write_all(block.as_bytes()).map_err(io)?;
        self.steps += 1;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}
