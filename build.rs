//! Compiles the protobuf API with a pure-Rust compiler (no system `protoc`) and
//! writes the descriptor set that server reflection serves.

use std::{env, fs, path::PathBuf};

use prost::Message;

const PROTOS: &[&str] = &[
    "proto/portcullis/v1/common.proto",
    "proto/portcullis/v1/identity.proto",
    "proto/portcullis/v1/workspace.proto",
    "proto/portcullis/v1/roles.proto",
    "proto/portcullis/v1/check.proto",
    "proto/portcullis/v1/audit.proto",
    "proto/portcullis/v1/watch.proto",
    "proto/portcullis/v1/bench.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("portcullis_descriptor.bin"),
        fds.encode_to_vec(),
    )?;
    // Messages know their protobuf names, which the codec uses to find their
    // descriptors; the codec refuses NUL in any string field (src/codec.rs).
    let mut config = prost_build::Config::new();
    config.enable_type_names();
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .codec_path("crate::codec::ValidatingCodec")
        .compile_fds_with_config(fds, config)?;
    Ok(())
}
