//! include/wavecp.h is what cbindgen generates from capi/src now: a declaration changed in the
//! Rust without regenerating the header fails here (WAVECP_BLESS=1 rewrites it).

use std::path::Path;

#[test]
fn checked_in_header_is_what_cbindgen_generates() {
    let capi = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(capi.join("cbindgen.toml")).unwrap();
    let mut fresh = Vec::new();
    cbindgen::Builder::new()
        .with_config(config)
        .with_src(capi.join("src/lib.rs"))
        .generate()
        .expect("cbindgen parses capi/src")
        .write(&mut fresh);
    let fresh = String::from_utf8(fresh).unwrap();
    let path = capi.join("../include/wavecp.h");
    if std::env::var_os("WAVECP_BLESS").is_some() {
        std::fs::write(&path, &fresh).unwrap();
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == fresh,
        "include/wavecp.h differs from what cbindgen generates from capi/src: run \
         `WAVECP_BLESS=1 cargo test --release -p wavecp-capi --test header` and commit it"
    );
    for f in [
        "wavecp_sim_create",
        "wavecp_sim_advance",
        "wavecp_last_error",
        "WAVECP_ERR_ORDER",
    ] {
        assert!(fresh.contains(f), "{f} missing from the header");
    }
}
