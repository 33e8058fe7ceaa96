//! Generates the ttrpc bindings of crius's own shim services. CRI types come ready-made
//! from the `k8s-cri` crate and are not generated here.

use std::{env, fs, path::PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=protos");
    if env::var_os("CARGO_FEATURE_SHIM").is_none() {
        return;
    }
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("shim");
    fs::create_dir_all(&out).expect("create OUT_DIR/shim");
    ttrpc_codegen::Codegen::new()
        .inputs(["protos/crius/shim/v1/log.proto"])
        .include("protos")
        .rust_protobuf()
        .customize(ttrpc_codegen::Customize {
            async_all: true,
            ..Default::default()
        })
        .out_dir(&out)
        .run()
        .expect("generate ttrpc bindings for protos/crius/shim/v1/log.proto");
    // `include!` rejects inner attributes; the generated files start with some.
    for entry in fs::read_dir(&out).expect("read OUT_DIR/shim") {
        let path = entry.expect("dir entry").path();
        let text = fs::read_to_string(&path).expect("read generated file");
        let kept: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with("#!") && !l.starts_with("//!"))
            .collect();
        fs::write(&path, kept.join("\n")).expect("write generated file");
    }
}
