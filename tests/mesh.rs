//! Meshes: the generator, the Gmsh reader on real files (ASCII, binary, mixed), point location,
//! and clear errors (never panics) for malformed files.

use crate::common::repo;
use std::path::Path;
use wavecp::mesh::{read_msh, rectangle, CellShape, MeshError};

#[test]
fn generated_rectangle_has_counts_tags_and_positive_cells() {
    let m = rectangle(CellShape::Tri, 4, 3, [0.0, 2.0], [1.0, 2.5]).unwrap();
    assert_eq!(m.num_nodes(), 20);
    assert_eq!(m.tris.len(), 24);
    assert_eq!(
        m.boundary_tags().into_iter().collect::<Vec<_>>(),
        vec![(1, 4), (2, 3), (3, 4), (4, 3)]
    );
    assert_eq!(m.resolve_tag(1, "left"), Some(4));
    m.check(Path::new("generated")).unwrap();
    let q = rectangle(CellShape::Quad, 4, 3, [0.0, 2.0], [1.0, 2.5]).unwrap();
    assert_eq!(q.quads.len(), 12);
    let area: f64 =
        wavecp::fem::element_matrices(&q, &wavecp::fem::WaveSpeed::PerCell(vec![1.0; 12]))
            .mass
            .iter()
            .sum();
    assert!(
        (area - 3.0).abs() < 1e-12,
        "lumped mass must sum to the area, got {area}"
    );
    assert!(rectangle(CellShape::Quad, 0, 3, [0.0, 1.0], [0.0, 1.0]).is_err());
}

#[test]
fn gmsh_ascii_and_binary_files_give_the_same_mesh() {
    let a = read_msh(&repo("meshes/inclusion.msh")).unwrap();
    let b = read_msh(&repo("meshes/inclusion_binary.msh")).unwrap();
    // ASCII files carry 16 significant digits, binary ones the exact doubles.
    assert_eq!(a.coords.len(), b.coords.len());
    let worst = a
        .coords
        .iter()
        .zip(&b.coords)
        .map(|(p, q)| (p[0] - q[0]).abs().max((p[1] - q[1]).abs()))
        .fold(0.0, f64::max);
    assert!(
        worst < 1e-15,
        "ASCII and binary coordinates differ by {worst}"
    );
    assert_eq!(a.tris, b.tris);
    assert_eq!(a.tri_tags, b.tri_tags);
    assert_eq!(a.boundary, b.boundary);
    assert_eq!(a.resolve_tag(2, "inclusion"), Some(1));
    assert_eq!(a.resolve_tag(2, "matrix"), Some(2));
    assert_eq!(a.resolve_tag(1, "outer"), Some(11));
    // The inclusion is the disk of radius 0.18: its cells' area is close to π r².
    let area: f64 = a
        .tris
        .iter()
        .zip(&a.tri_tags)
        .filter(|(_, t)| **t == 1)
        .map(|(t, _)| wavecp::mesh::signed_area(&a.coords, t))
        .sum();
    let disk = std::f64::consts::PI * 0.18 * 0.18;
    assert!(
        (area - disk).abs() / disk < 0.01,
        "inclusion area {area} vs {disk}"
    );
    // The outer boundary has length 4.
    let len: f64 = a
        .boundary
        .iter()
        .filter(|e| e.tag == 11)
        .map(|e| {
            let (p, q) = (a.coords[e.nodes[0] as usize], a.coords[e.nodes[1] as usize]);
            ((p[0] - q[0]).powi(2) + (p[1] - q[1]).powi(2)).sqrt()
        })
        .sum();
    assert!((len - 4.0).abs() < 1e-9);
}

#[test]
fn mixed_gmsh_mesh_has_both_cell_kinds_and_the_right_area() {
    let m = read_msh(&repo("meshes/lshape.msh")).unwrap();
    assert!(!m.tris.is_empty() && !m.quads.is_empty());
    let c = wavecp::fem::WaveSpeed::PerCell(vec![1.0; m.num_cells()]);
    let area: f64 = wavecp::fem::element_matrices(&m, &c).mass.iter().sum();
    assert!((area - 3.0).abs() < 1e-10, "L-shape area {area}");
    assert_eq!(m.resolve_tag(1, "walls"), Some(12));
}

#[test]
fn point_location_interpolates_linear_fields_exactly() {
    for m in [
        read_msh(&repo("meshes/lshape.msh")).unwrap(),
        rectangle(CellShape::Tri, 7, 5, [0.0, 1.0], [0.0, 1.0]).unwrap(),
    ] {
        let u: Vec<f64> = m
            .coords
            .iter()
            .map(|p| 3.0 * p[0] - 2.0 * p[1] + 0.5)
            .collect();
        for p in [[0.3, 0.4], [0.77, 0.123], [0.999, 0.999], [0.0, 0.0]] {
            let loc = m.locate(p).unwrap();
            let v = loc.interpolate(&u);
            assert!(
                (v - (3.0 * p[0] - 2.0 * p[1] + 0.5)).abs() < 1e-10,
                "at {p:?}: {v}"
            );
        }
        assert!(m.locate([5.0, 5.0]).is_none());
    }
    // The re-entrant corner region of the L is outside.
    assert!(read_msh(&repo("meshes/lshape.msh"))
        .unwrap()
        .locate([1.5, 1.5])
        .is_none());
}

const GOOD: &str = "$MeshFormat\n4.1 0 8\n$EndMeshFormat\n$PhysicalNames\n2\n1 5 \"side\"\n2 7 \"body\"\n$EndPhysicalNames\n\
$Entities\n0 1 1 0\n1 0 0 0 1 0 0 1 5 0\n1 0 0 0 1 1 0 1 7 0\n$EndEntities\n\
$Nodes\n1 4 1 4\n2 1 0 4\n1\n2\n3\n4\n0 0 0\n1 0 0\n1 1 0\n0 1 0\n$EndNodes\n\
$Elements\n2 3 1 3\n1 1 1 1\n1 1 2\n2 1 2 2\n2 1 2 3\n3 3 4 1\n$EndElements\n";

fn parse(text: &str) -> Result<wavecp::mesh::Mesh, MeshError> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("case.msh");
    std::fs::write(&p, text).unwrap();
    read_msh(&p)
}

fn expect_err(text: &str, needle: &str) {
    let err = parse(text)
        .expect_err("malformed file was accepted")
        .to_string();
    assert!(
        err.contains("case.msh"),
        "error does not name the file: {err}"
    );
    assert!(
        err.contains(needle),
        "error `{err}` does not mention `{needle}`"
    );
}

#[test]
fn a_small_handwritten_file_parses() {
    let m = parse(GOOD).unwrap();
    assert_eq!(m.tris.len(), 2);
    assert_eq!(m.tri_tags, vec![7, 7]);
    assert_eq!(m.boundary.len(), 1);
    assert_eq!(m.resolve_tag(1, "side"), Some(5));
}

#[test]
fn malformed_files_give_clear_errors() {
    expect_err(&GOOD[..GOOD.len() / 2], "truncated");
    for cut in [20, 60, 150, 200, 260, GOOD.len() - 20] {
        assert!(parse(&GOOD[..cut]).is_err(), "truncation at {cut} accepted");
    }
    expect_err(&GOOD.replace("4.1 0 8", "2.2 0 8"), "version 2.2");
    expect_err(&GOOD.replace("2 1 2 2\n", "2 1 9 2\n"), "element type 9");
    expect_err(&GOOD.replace("3 3 4 1\n", "3 3 4 99\n"), "node tag 99");
    // Swap two nodes of the second triangle: clockwise.
    expect_err(&GOOD.replace("3 3 4 1\n", "3 4 3 1\n"), "inverted");
    // Collapse a triangle onto a line.
    expect_err(
        &GOOD.replace("1 1 0\n0 1 0\n", "1 1 0\n0.5 0.5 0\n"),
        "degenerate",
    );
    expect_err("hello\n", "$MeshFormat");
    expect_err(&GOOD.replace("$EndNodes", "$EndNodez"), "$EndNodes");
    expect_err(&GOOD.replace("1 4 1 4\n", "1 4000000000000 1 4\n"), "count");
}

#[test]
fn a_missing_file_names_the_path() {
    let err = read_msh(Path::new("/nonexistent/x.msh"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/x.msh"));
    // A geometry script given for its mesh says so, and how to mesh it.
    let err = read_msh(&repo("meshes/inclusion.geo"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("inclusion.geo: a Gmsh geometry script, not a mesh")
            && err.contains("gmsh -2"),
        "{err}"
    );
}

#[test]
fn truncated_binary_files_never_panic() {
    let bytes = std::fs::read(repo("meshes/inclusion_binary.msh")).unwrap();
    for k in 1..40 {
        let cut = bytes.len() * k / 40;
        let r = wavecp::mesh::gmsh_parse(&bytes[..cut], Path::new("cut.msh"));
        assert!(r.is_err(), "truncated at {cut} of {} accepted", bytes.len());
    }
}

/// The bucket locator answers exactly like the brute-force search, on structured and Gmsh meshes.
#[test]
fn the_bucket_locator_agrees_with_brute_force() {
    for m in [
        rectangle(CellShape::Quad, 30, 30, [0.0, 1.0], [0.0, 1.0]).unwrap(),
        rectangle(CellShape::Tri, 17, 9, [-1.0, 2.0], [0.0, 0.5]).unwrap(),
        read_msh(&repo("meshes/lshape.msh")).unwrap(),
        read_msh(&repo("meshes/inclusion.msh")).unwrap(),
    ] {
        let b = m.bbox();
        let loc = m.locator();
        for i in 0..64 {
            for j in 0..64 {
                let p = [
                    b[0] + (b[2] - b[0]) * i as f64 / 63.0,
                    b[1] + (b[3] - b[1]) * j as f64 / 63.0,
                ];
                assert_eq!(loc.locate(p), m.locate(p), "at {p:?}");
            }
        }
    }
    // Every point of a rectangle is found (a None on both sides would also "agree").
    let m = rectangle(CellShape::Quad, 30, 30, [0.0, 1.0], [0.0, 1.0]).unwrap();
    let loc = m.locator();
    for i in 0..=97 {
        for j in 0..=97 {
            let p = [i as f64 / 97.0, j as f64 / 97.0];
            assert!(loc.locate(p).is_some(), "{p:?} not found");
        }
    }
}
