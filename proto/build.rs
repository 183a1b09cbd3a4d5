//! Generates the typed servers and clients of every `.proto` file below this folder, the
//! module tree that holds them (one module per protobuf package: `user.v1` becomes
//! `meshwork_proto::user::v1`), and the descriptor sets that server reflection serves.
//!
//! The files are found, not listed: a new service's `.proto` needs no edit here.
//! `protox` is a protobuf compiler written in Rust, so a fresh machine needs only cargo.

use std::{
    collections::BTreeMap,
    env, fs,
    path::{Path, PathBuf},
};

type BuildResult<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> BuildResult<()> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let vendor = root.join("../proto-vendor");
    println!("cargo:rerun-if-changed={}", root.display());
    println!("cargo:rerun-if-changed={}", vendor.display());

    let mut files = Vec::new();
    find_protos(&root, &root, &mut files)?;
    files.sort();

    let mut compiler = protox::Compiler::new([&root])?;
    compiler.include_source_info(true);
    // With the imports: reflection needs them, or grpcurl cannot `describe` a message that
    // holds a `google.protobuf.Timestamp` (the generated code still uses `prost-types`).
    compiler.include_imports(true);
    compiler.open_files(&files)?;
    // `compile_fds` ignores `file_descriptor_set_path`, so the set is written here.
    fs::write(
        out_dir.join("meshwork_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    // The google.rpc error details, for reflection only (tonic-types has the Rust types):
    // with them grpcurl prints an error's ErrorInfo and BadRequest instead of raw bytes.
    let mut error_details = protox::Compiler::new([&vendor])?;
    error_details.include_imports(true);
    error_details.open_files(["google/rpc/error_details.proto"])?;
    fs::write(
        out_dir.join("error_details_descriptor.bin"),
        error_details.encode_file_descriptor_set(),
    )?;

    let set = compiler.file_descriptor_set();
    let packages: Vec<String> = set
        .file
        .iter()
        .filter(|file| files.iter().any(|name| Path::new(file.name()) == name))
        .map(|file| file.package().to_owned())
        .collect();
    fs::write(out_dir.join("packages.rs"), module_tree(&packages))?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Small first buffers (see `src/codec.rs`).
        .codec_path("crate::codec::SmallBufferCodec")
        .compile_fds(set)?;
    Ok(())
}

/// Every `.proto` below `dir`, as a path relative to `root`.
fn find_protos(root: &Path, dir: &Path, found: &mut Vec<PathBuf>) -> BuildResult<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            find_protos(root, &path, found)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            found.push(path.strip_prefix(root)?.to_path_buf());
        }
    }
    Ok(())
}

/// Nested `pub mod` blocks, one per package segment, each leaf including its generated file.
fn module_tree(packages: &[String]) -> String {
    #[derive(Default)]
    struct Node {
        children: BTreeMap<String, Node>,
        package: Option<String>,
    }
    fn render(node: &Node, out: &mut String) {
        if let Some(package) = &node.package {
            out.push_str(&format!(
                "include!(concat!(env!(\"OUT_DIR\"), \"/{package}.rs\"));\n"
            ));
        }
        for (name, child) in &node.children {
            out.push_str(&format!(
                "#[doc = \"Generated from the `.proto` files of this package.\"]\npub mod {name} {{\n"
            ));
            render(child, out);
            out.push_str("}\n");
        }
    }
    let mut tree = Node::default();
    for package in packages {
        let node = package.split('.').fold(&mut tree, |node, segment| {
            node.children.entry(segment.to_owned()).or_default()
        });
        node.package = Some(package.clone());
    }
    let mut out = String::new();
    render(&tree, &mut out);
    out
}
