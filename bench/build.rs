//! bare tonic's `hello.v1` server, generated as a new tonic project generates it: with
//! tonic-prost's own codec. The services' code (`meshwork-proto`) has a codec of its own
//! (`meshwork_proto::codec`), and the baseline must not get what the mesh changed.
//! `protox` compiles the file, so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../proto/hello/v1/hello.proto");
    let files = protox::compile(["hello/v1/hello.proto"], ["../proto"])?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .compile_fds(files)?;
    Ok(())
}
