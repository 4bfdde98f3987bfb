//! Compiles `proto/fds/v1/fds.proto` (repository root) into Rust when the `grpc` feature is on.
//!
//! No `protoc` is needed: `protox` parses the proto files into a `FileDescriptorSet` in pure Rust
//! and `tonic-prost-build` generates the messages, client and server from it. The encoded set is
//! written next to the generated code for server reflection.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    #[cfg(feature = "grpc")]
    compile_fds_proto()?;
    Ok(())
}

#[cfg(feature = "grpc")]
fn compile_fds_proto() -> Result<(), Box<dyn std::error::Error>> {
    use std::path::PathBuf;

    use prost::Message;

    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest.join("../../proto");
    let file = proto_root.join("fds/v1/fds.proto");
    println!("cargo:rerun-if-changed={}", proto_root.display());
    println!("cargo:rerun-if-changed={}", file.display());

    let fds = protox::compile([&file], [&proto_root])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("fds_v1_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
