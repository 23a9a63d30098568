//! Generates the gRPC code for the cluster-autoscaler expander protocol and for
//! KEDA's external scaler protocol.
//!
//! `protox` parses the .proto files in pure Rust, so building needs no `protoc`.
//! The protocol as older and newer cluster-autoscalers declare it (under
//! tests/proto/) is generated too, for the wire-compatibility tests' clients.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=tests/proto");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    let fds = protox::compile(["expander.proto", "externalscaler.proto"], ["proto"])?;
    tonic_prost_build::configure().compile_fds(fds)?;

    // Test-only clients: the same package under another output directory each.
    for generation in ["ca134", "ca135"] {
        let dir = out_dir.join(generation);
        std::fs::create_dir_all(&dir)?;
        let fds = protox::compile([format!("{generation}/expander.proto")], ["tests/proto"])?;
        tonic_prost_build::configure()
            .build_server(false)
            .out_dir(&dir)
            .compile_fds(fds)?;
    }
    Ok(())
}
