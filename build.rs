//! Generates the typed servers and clients of every service from `proto/`, plus the file
//! descriptor set that server reflection serves.
//!
//! `protox` is a protobuf compiler written in Rust, so a fresh machine needs only cargo:
//! no system `protoc`.

use std::{env, fs, path::PathBuf};

const PROTOS: &[&str] = &[
    "hello/v1/hello.proto",
    "user/v1/user.proto",
    "order/v1/order.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=proto-vendor");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_source_info(true);
    // With the imports: reflection needs them, or grpcurl cannot `describe` a message that
    // holds a `google.protobuf.Timestamp` (the generated code still uses `prost-types`).
    compiler.include_imports(true);
    compiler.open_files(PROTOS)?;

    // `compile_fds` ignores `file_descriptor_set_path`, so the set is written here.
    fs::write(
        out_dir.join("meshwork_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    // The google.rpc error details, for reflection only (tonic-types has the Rust types):
    // with them grpcurl prints an error's ErrorInfo and BadRequest instead of raw bytes.
    let mut error_details = protox::Compiler::new(["proto-vendor"])?;
    error_details.include_imports(true);
    error_details.open_files(["google/rpc/error_details.proto"])?;
    fs::write(
        out_dir.join("error_details_descriptor.bin"),
        error_details.encode_file_descriptor_set(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
