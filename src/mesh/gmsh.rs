//! Gmsh MSH 4.1 reader (ASCII and binary): nodes, P1/Q1 cells, boundary lines, physical groups.
//!
//! Written here rather than taken from `mshio` because that crate drops node tags when they are
//! contiguous (assuming blocks come sorted), cannot read `$PhysicalNames`, and its sizes are
//! unchecked; a malformed file must give an error naming the file and the fault, never a panic.

use super::{BoundaryEdge, Mesh, MeshError};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Reads a Gmsh MSH 4.1 file. Only elements of dimension 2 become cells; lines carry boundary
/// tags; points are ignored. The region tag of a cell is the first physical tag of its surface
/// (0 when the surface has none).
pub fn read_msh(path: &Path) -> Result<Mesh, MeshError> {
    if path.extension().is_some_and(|e| e == "geo") {
        return Err(MeshError::Parse {
            file: path.to_path_buf(),
            msg: "a Gmsh geometry script, not a mesh: mesh it first (`gmsh -2 -format msh41 FILE.geo`; scripts/make-meshes does so for the shipped ones) and give the .msh".into(),
        });
    }
    let bytes = std::fs::read(path).map_err(|source| MeshError::Io {
        file: path.to_path_buf(),
        source,
    })?;
    parse(&bytes, path)
}

/// What the sections of a file have given so far.
#[derive(Default)]
struct Parsed {
    names: BTreeMap<(i32, i32), String>,
    /// Physical tags of each entity: (dim, entity tag) → physical tags.
    entity_phys: HashMap<(i32, i32), Vec<i32>>,
    node_index: HashMap<u64, u32>,
    coords: Vec<[f64; 2]>,
    raw_cells: Vec<RawCell>,
    lines: Vec<(i32, [u64; 2])>,
}

/// Parses MSH 4.1 bytes; `file` is used in error messages.
pub fn parse(bytes: &[u8], file: &Path) -> Result<Mesh, MeshError> {
    let mut r = Reader {
        b: bytes,
        pos: 0,
        binary: false,
        swap: false,
        file: file.to_path_buf(),
        section: "file start",
    };
    let mut p = Parsed::default();
    let mut seen_format = false;
    let mut have_nodes = false;
    let mut have_elements = false;
    let mut have_entities = false;
    let mut have_names = false;

    while let Some(tag) = r.next_section()? {
        // A repeated section would double the cells or mix two meshes: refuse it.
        let seen = match tag.as_str() {
            "$Nodes" => Some(&mut have_nodes),
            "$Elements" => Some(&mut have_elements),
            "$Entities" => Some(&mut have_entities),
            "$PhysicalNames" => Some(&mut have_names),
            _ => None,
        };
        if let Some(seen) = seen {
            if *seen {
                return Err(r.err(format!("section {tag} appears twice")));
            }
            *seen = true;
        }
        if tag == "$Entities" && have_elements {
            return Err(r.err(
                "$Entities comes after $Elements: the elements' physical tags would be lost (Gmsh writes $Entities first)".into(),
            ));
        }
        match tag.as_str() {
            "$MeshFormat" => {
                mesh_format(&mut r)?;
                seen_format = true;
            }
            _ if !seen_format => {
                return Err(r.err(format!("expected $MeshFormat first, found {tag}")))
            }
            "$PhysicalNames" => p.physical_names(&mut r)?,
            "$Entities" => p.entities(&mut r)?,
            "$Nodes" => p.nodes(&mut r)?,
            "$Elements" => p.elements(&mut r, have_entities)?,
            other => {
                let end = format!("$End{}", &other[1..]);
                r.skip_section(&end)?;
            }
        }
    }
    if !seen_format {
        return Err(r.err("no $MeshFormat section: not a Gmsh MSH file".into()));
    }
    if !have_nodes || !have_elements {
        return Err(r.err("file has no $Nodes or no $Elements section".into()));
    }
    p.into_mesh(file)
}

/// `$MeshFormat`: version 4.1, 8-byte data, ASCII or binary (with its byte order).
fn mesh_format(r: &mut Reader<'_>) -> Result<(), MeshError> {
    r.section = "$MeshFormat";
    let version = r.ascii_token()?;
    if version != "4.1" {
        return Err(r.err(format!("MSH version {version} is not supported (only 4.1; re-export with `gmsh -format msh41` or Mesh.MshFileVersion = 4.1)")));
    }
    let ftype = r.ascii_token()?;
    let dsize = r.ascii_token()?;
    if dsize != "8" {
        return Err(r.err(format!("data size {dsize} is not supported (only 8)")));
    }
    match ftype.as_str() {
        "0" => {}
        "1" => {
            r.skip_line()?;
            let one = r.take(4)?;
            let v = u32::from_le_bytes([one[0], one[1], one[2], one[3]]);
            r.swap = match v {
                1 => false,
                0x0100_0000 => true,
                _ => return Err(r.err("binary endianness marker is not 1".into())),
            };
            r.binary = true;
        }
        other => {
            return Err(r.err(format!(
                "file type {other} is neither 0 (ASCII) nor 1 (binary)"
            )))
        }
    }
    r.expect_end("$EndMeshFormat")?;
    Ok(())
}

impl Parsed {
    fn physical_names(&mut self, r: &mut Reader<'_>) -> Result<(), MeshError> {
        r.section = "$PhysicalNames";
        let n = r.ascii_count()?;
        for _ in 0..n {
            let dim: i32 = r.ascii_parse("dimension")?;
            let t: i32 = r.ascii_parse("physical tag")?;
            let name = r.quoted()?;
            self.names.insert((dim, t), name);
        }
        r.expect_end("$EndPhysicalNames")?;
        Ok(())
    }

    fn entities(&mut self, r: &mut Reader<'_>) -> Result<(), MeshError> {
        r.section = "$Entities";
        let counts = [r.size_t()?, r.size_t()?, r.size_t()?, r.size_t()?];
        for (dim, &count) in counts.iter().enumerate() {
            for _ in 0..count {
                let etag = r.int()?;
                let nbox = if dim == 0 { 3 } else { 6 };
                for _ in 0..nbox {
                    r.f64()?;
                }
                let np = r.count()?;
                let mut phys = Vec::with_capacity(np);
                for _ in 0..np {
                    phys.push(r.int()?);
                }
                if dim > 0 {
                    let nb = r.count()?;
                    for _ in 0..nb {
                        r.int()?;
                    }
                }
                self.entity_phys.insert((dim as i32, etag), phys);
            }
        }
        r.expect_end("$EndEntities")?;
        Ok(())
    }

    fn nodes(&mut self, r: &mut Reader<'_>) -> Result<(), MeshError> {
        r.section = "$Nodes";
        let nblocks = r.count()?;
        let nnodes = r.count()?;
        let _min = r.size_t()?;
        let _max = r.size_t()?;
        self.coords.reserve(nnodes);
        for _ in 0..nblocks {
            let dim = r.int()?;
            let _etag = r.int()?;
            let parametric = r.int()?;
            let n = r.count()?;
            let mut tags = Vec::with_capacity(n);
            for _ in 0..n {
                tags.push(r.size_t()?);
            }
            for t in tags {
                let (x, y, _z) = (r.f64()?, r.f64()?, r.f64()?);
                if parametric != 0 {
                    for _ in 0..dim.clamp(0, 3) {
                        r.f64()?;
                    }
                }
                if self
                    .node_index
                    .insert(t, self.coords.len() as u32)
                    .is_some()
                {
                    return Err(r.err(format!("node tag {t} appears twice")));
                }
                self.coords.push([x, y]);
            }
        }
        if self.coords.len() != nnodes {
            return Err(r.err(format!(
                "header announces {nnodes} nodes but the blocks hold {}",
                self.coords.len()
            )));
        }
        r.expect_end("$EndNodes")?;
        Ok(())
    }

    /// `$Elements`: cells of dimension 2 and boundary lines, with the physical tags of their
    /// entities (which `$Entities`, when the file has one, must list).
    fn elements(&mut self, r: &mut Reader<'_>, have_entities: bool) -> Result<(), MeshError> {
        r.section = "$Elements";
        let nblocks = r.count()?;
        let nelem = r.count()?;
        let _min = r.size_t()?;
        let _max = r.size_t()?;
        let mut found = 0usize;
        for _ in 0..nblocks {
            let dim = r.int()?;
            let etag = r.int()?;
            let etype = r.int()?;
            let n = r.count()?;
            found = found.saturating_add(n);
            let (nv, edim) = match etype {
                    15 => (1, 0),
                    1 => (2, 1),
                    2 => (3, 2),
                    3 => (4, 2),
                    other => {
                        return Err(r.err(format!(
                            "element type {other} ({}) is not supported: wavecp reads 1 (line), 2 (3-node triangle), 3 (4-node quadrangle) and 15 (point); mesh with first-order elements",
                            element_name(other)
                        )))
                    }
                };
            if dim != edim {
                return Err(r.err(format!(
                        "a block of {} elements says it lies on an entity of dimension {dim}, not {edim}",
                        element_name(etype)
                    )));
            }
            if have_entities && !self.entity_phys.contains_key(&(dim, etag)) {
                return Err(r.err(format!(
                        "a block of {} elements lies on entity {etag} of dimension {dim}, which $Entities does not list (its physical tags would be lost)",
                        element_name(etype)
                    )));
            }
            let phys = self.entity_phys.get(&(dim, etag));
            for _ in 0..n {
                let _tag = r.size_t()?;
                let mut v = [0u64; 4];
                for slot in v.iter_mut().take(nv) {
                    *slot = r.size_t()?;
                }
                match etype {
                    1 => {
                        for &p in phys.map(|p| &p[..]).unwrap_or(&[]) {
                            self.lines.push((p, [v[0], v[1]]));
                        }
                    }
                    2 | 3 => self.raw_cells.push(RawCell {
                        nv,
                        v,
                        tag: phys.and_then(|p| p.first().copied()).unwrap_or(0),
                    }),
                    _ => {}
                }
            }
        }
        if found != nelem {
            return Err(r.err(format!(
                "header announces {nelem} elements but the blocks hold {found}"
            )));
        }
        r.expect_end("$EndElements")?;
        Ok(())
    }

    /// The mesh, node tags resolved to indices.
    fn into_mesh(self, file: &Path) -> Result<Mesh, MeshError> {
        let node_index = self.node_index;
        let lookup = |t: u64| -> Result<u32, MeshError> {
            node_index.get(&t).copied().ok_or_else(|| MeshError::Parse {
                file: file.to_path_buf(),
                msg: format!(
                    "$Elements: an element refers to node tag {t}, which is not in $Nodes"
                ),
            })
        };
        let mut mesh = Mesh {
            coords: self.coords,
            names: self.names,
            ..Mesh::default()
        };
        for c in &self.raw_cells {
            if c.nv == 3 {
                mesh.tris
                    .push([lookup(c.v[0])?, lookup(c.v[1])?, lookup(c.v[2])?]);
                mesh.tri_tags.push(c.tag);
            } else {
                mesh.quads.push([
                    lookup(c.v[0])?,
                    lookup(c.v[1])?,
                    lookup(c.v[2])?,
                    lookup(c.v[3])?,
                ]);
                mesh.quad_tags.push(c.tag);
            }
        }
        for (tag, v) in &self.lines {
            mesh.boundary.push(BoundaryEdge {
                nodes: [lookup(v[0])?, lookup(v[1])?],
                tag: *tag,
            });
        }
        mesh.drop_unused_nodes();
        mesh.check(file)?;
        Ok(mesh)
    }
}

struct RawCell {
    nv: usize,
    v: [u64; 4],
    tag: i32,
}

fn element_name(t: i32) -> &'static str {
    match t {
        4 => "4-node tetrahedron",
        5 => "8-node hexahedron",
        6 => "6-node prism",
        7 => "5-node pyramid",
        8 => "3-node second-order line",
        9 => "6-node second-order triangle",
        10 => "9-node second-order quadrangle",
        16 => "8-node second-order quadrangle",
        _ => "unknown",
    }
}

/// Cursor over the file bytes; reads ASCII tokens or binary values depending on the mode.
struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
    binary: bool,
    swap: bool,
    file: PathBuf,
    section: &'static str,
}

impl Reader<'_> {
    fn err(&self, msg: String) -> MeshError {
        let line = 1 + self.b[..self.pos.min(self.b.len())]
            .iter()
            .filter(|&&c| c == b'\n')
            .count();
        MeshError::Parse {
            file: self.file.clone(),
            msg: format!("{} (near line {line}): {msg}", self.section),
        }
    }

    fn truncated(&self) -> MeshError {
        self.err("file ends unexpectedly (truncated?)".into())
    }

    fn skip_ws(&mut self) {
        while self.pos < self.b.len() && self.b[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
    }

    fn ascii_token(&mut self) -> Result<String, MeshError> {
        self.skip_ws();
        let start = self.pos;
        while self.pos < self.b.len() && !self.b[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
        if start == self.pos {
            return Err(self.truncated());
        }
        Ok(String::from_utf8_lossy(&self.b[start..self.pos]).into_owned())
    }

    fn ascii_parse<T: std::str::FromStr>(&mut self, what: &str) -> Result<T, MeshError> {
        let tok = self.ascii_token()?;
        tok.parse()
            .map_err(|_| self.err(format!("expected {what}, found `{tok}`")))
    }

    fn ascii_count(&mut self) -> Result<usize, MeshError> {
        let n: usize = self.ascii_parse("a count")?;
        self.check_count(n)
    }

    fn quoted(&mut self) -> Result<String, MeshError> {
        self.skip_ws();
        if self.b.get(self.pos) != Some(&b'"') {
            return Err(self.err("expected a quoted physical name".into()));
        }
        let start = self.pos + 1;
        let end = self.b[start..]
            .iter()
            .position(|&c| c == b'"' || c == b'\n')
            .map(|p| start + p)
            .filter(|&p| self.b[p] == b'"')
            .ok_or_else(|| self.err("unterminated physical name".into()))?;
        self.pos = end + 1;
        Ok(String::from_utf8_lossy(&self.b[start..end]).into_owned())
    }

    fn take(&mut self, n: usize) -> Result<&[u8], MeshError> {
        if self.pos + n > self.b.len() {
            return Err(self.truncated());
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn bin<const N: usize>(&mut self) -> Result<[u8; N], MeshError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        if self.swap {
            a.reverse();
        }
        Ok(a)
    }

    fn size_t(&mut self) -> Result<u64, MeshError> {
        if self.binary {
            Ok(u64::from_le_bytes(self.bin::<8>()?))
        } else {
            self.ascii_parse("an unsigned integer")
        }
    }

    /// A size that will be used to reserve memory: bounded by what the file could hold.
    fn count(&mut self) -> Result<usize, MeshError> {
        let n = self.size_t()?;
        self.check_count(usize::try_from(n).unwrap_or(usize::MAX))
    }

    fn check_count(&self, n: usize) -> Result<usize, MeshError> {
        if n > self.b.len() {
            return Err(self.err(format!("count {n} is larger than the file could hold")));
        }
        Ok(n)
    }

    fn int(&mut self) -> Result<i32, MeshError> {
        if self.binary {
            Ok(i32::from_le_bytes(self.bin::<4>()?))
        } else {
            self.ascii_parse("an integer")
        }
    }

    fn f64(&mut self) -> Result<f64, MeshError> {
        if self.binary {
            Ok(f64::from_le_bytes(self.bin::<8>()?))
        } else {
            self.ascii_parse("a real number")
        }
    }

    fn skip_line(&mut self) -> Result<(), MeshError> {
        match self.b[self.pos..].iter().position(|&c| c == b'\n') {
            Some(p) => {
                self.pos += p + 1;
                Ok(())
            }
            None => Err(self.truncated()),
        }
    }

    /// Next `$Section` header line, or `None` at the end of the file.
    fn next_section(&mut self) -> Result<Option<String>, MeshError> {
        self.skip_ws();
        if self.pos >= self.b.len() {
            return Ok(None);
        }
        let save = self.binary;
        self.binary = false;
        let tok = self.ascii_token()?;
        self.binary = save;
        if !tok.starts_with('$') || tok.len() < 2 {
            return Err(self.err(format!(
                "expected a section header ($MeshFormat, $Nodes, ...), found `{}`",
                tok.chars().take(40).collect::<String>()
            )));
        }
        self.skip_line()?;
        Ok(Some(tok))
    }

    fn expect_end(&mut self, end: &str) -> Result<(), MeshError> {
        self.skip_ws();
        let tok = self.ascii_token()?;
        if tok != end {
            return Err(self.err(format!(
                "expected {end}, found `{}` (counts in the section do not match its content)",
                tok.chars().take(40).collect::<String>()
            )));
        }
        Ok(())
    }

    fn skip_section(&mut self, end: &str) -> Result<(), MeshError> {
        let pat = end.as_bytes();
        match self.b[self.pos..].windows(pat.len()).position(|w| w == pat) {
            Some(p) => {
                self.pos += p + pat.len();
                Ok(())
            }
            None => Err(self.err(format!("section is never closed by {end}"))),
        }
    }
}
