//! Which binaries the tests run, and the guarantee that they are the current source's.
//!
//! The services are found, not listed: every `services/<dir>/Cargo.toml` is one, its binary
//! named after its package (`services/user` builds `user-service`). A service with a
//! `migrations/` folder stores data, so the kit gives it a fresh database.
//!
//! `cargo test -p meshwork-e2e` does not build the service binaries (they are other
//! packages), so a test could run a binary older than the code it claims to test. [`binary`]
//! refuses one: it reads the dep-info file cargo writes beside each binary
//! (`target/<profile>/<name>.d`, every source file the binary was built from, the
//! `.proto`s and embedded migrations included) and panics if any of them changed after the
//! binary was written. Why cargo's list rather than our own idea of "the sources": it names
//! exactly the files whose change makes `cargo build` rebuild, so the fix the message names
//! always works; a README or a `Cargo.toml` comment, which cargo ignores, never blocks a run.

use std::{
    fs, io,
    path::{Path, PathBuf},
    time::SystemTime,
};

/// The workspace's root folder (the parent of this crate's).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the e2e crate lives in a folder of the workspace")
        .to_path_buf()
}

/// One service of the workspace: a package under `services/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceCrate {
    /// Its binary (and package) name, e.g. `user-service`.
    pub binary: String,
    /// Its folder, `services/<dir>`.
    pub dir: PathBuf,
}

impl ServiceCrate {
    /// Whether it keeps data (it has migrations), so the tests give it a database.
    pub fn stores_data(&self) -> bool {
        self.dir.join("migrations").is_dir()
    }
}

/// Every service of the workspace, by binary name: one per `services/*/Cargo.toml`.
pub fn services() -> Vec<ServiceCrate> {
    let root = workspace_root().join("services");
    let entries = fs::read_dir(&root).unwrap_or_else(|e| panic!("{}: {e}", root.display()));
    let mut services: Vec<ServiceCrate> = entries
        .filter_map(|entry| {
            let dir = entry.ok()?.path();
            let manifest = fs::read_to_string(dir.join("Cargo.toml")).ok()?;
            Some(ServiceCrate {
                binary: package_name(&manifest)?,
                dir,
            })
        })
        .collect();
    services.sort_by(|a, b| a.binary.cmp(&b.binary));
    services
}

/// The service whose binary is `name`, if `name` is one.
pub fn service(name: &str) -> Option<ServiceCrate> {
    services().into_iter().find(|service| service.binary == name)
}

/// `name = "..."` of a manifest's `[package]` table. A line scan rather than a TOML parser:
/// the workspace's manifests are ours and write it the one usual way.
fn package_name(manifest: &str) -> Option<String> {
    let mut in_package = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if let Some(value) = in_package
            .then(|| line.strip_prefix("name"))
            .flatten()
            .and_then(|rest| rest.trim_start().strip_prefix('='))
        {
            return Some(value.trim().trim_matches('"').to_owned());
        }
    }
    None
}

/// Path of a workspace binary, e.g. `user-service`, built from the current source: panics
/// when it is missing or older than one of its sources.
pub fn binary(name: &str) -> PathBuf {
    let test_exe = std::env::current_exe().expect("the test executable has a path");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let profile_dir = test_exe
        .parent()
        .and_then(Path::parent)
        .expect("test executables live in target/<profile>/deps");
    let target_dir = profile_dir.parent().unwrap_or(profile_dir);
    let path = profile_dir.join(name);
    let build = "run `cargo build --workspace --bins` (or `make test`, which builds first)";
    assert!(path.exists(), "{} is missing: {build}", path.display());
    match newer_source(&path, target_dir) {
        Ok(None) => path,
        Ok(Some(source)) => panic!(
            "{} is stale: {} changed after it was built; {build}",
            path.display(),
            source.display()
        ),
        Err(e) => panic!("cannot tell whether {} is current ({e}); {build}", path.display()),
    }
}

/// The first source of `binary` (as listed in its dep-info file, `<binary>.d`) that was
/// modified after `binary` was, or that no longer exists. A listed folder (a build script's
/// `rerun-if-changed`) stands for every file below it, as it does for cargo. Files under
/// `target_dir` are cargo's own outputs (generated code) and are not sources.
pub fn newer_source(binary: &Path, target_dir: &Path) -> io::Result<Option<PathBuf>> {
    let built = fs::metadata(binary)?.modified()?;
    let dep_info_path = binary.with_extension("d");
    let dep_info = fs::read_to_string(&dep_info_path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dep_info_path.display())))?;
    let root = workspace_root();
    for source in dep_info_sources(&dep_info) {
        // Relative paths appear only with `build.dep-info-basedir`; ours is the workspace.
        let source = if source.is_absolute() {
            source
        } else {
            root.join(source)
        };
        if source.starts_with(target_dir) {
            continue;
        }
        if let Some(newer) = newer_than(&source, built)? {
            return Ok(Some(newer));
        }
    }
    Ok(None)
}

/// `path`, or a file below it, if modified after `built` or missing.
fn newer_than(path: &Path, built: SystemTime) -> io::Result<Option<PathBuf>> {
    let metadata = match fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Some(path.to_path_buf())),
        Err(e) => return Err(e),
    };
    if metadata.is_dir() {
        for entry in fs::read_dir(path)? {
            if let Some(newer) = newer_than(&entry?.path(), built)? {
                return Ok(Some(newer));
            }
        }
        return Ok(None);
    }
    Ok((metadata.modified()? > built).then(|| path.to_path_buf()))
}

/// The prerequisites of a Makefile-style dep-info file: the first rule's right-hand side,
/// split on spaces that are not escaped (`\ ` is a space inside a path).
fn dep_info_sources(dep_info: &str) -> Vec<PathBuf> {
    let rule = dep_info.lines().next().unwrap_or_default();
    let Some((_, prerequisites)) = rule.split_once(": ") else {
        return Vec::new();
    };
    let mut sources = Vec::new();
    let mut current = String::new();
    let mut chars = prerequisites.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => current.extend(chars.next()),
            ' ' => sources.extend((!current.is_empty()).then(|| PathBuf::from(std::mem::take(&mut current)))),
            c => current.push(c),
        }
    }
    sources.extend((!current.is_empty()).then(|| PathBuf::from(current)));
    sources
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A fake build: a binary, its dep-info naming `sources`, every file dated `at`.
    struct Build {
        dir: tempfile::TempDir,
        binary: PathBuf,
        target: PathBuf,
    }

    const BUILT: Duration = Duration::from_secs(1_000_000);

    impl Build {
        fn new(sources: &[&str]) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let target = dir.path().join("target");
            let binary = target.join("debug/foo-service");
            fs::create_dir_all(binary.parent().unwrap()).unwrap();
            let listed: Vec<String> = sources
                .iter()
                .map(|source| {
                    let path = dir.path().join(source);
                    if source.ends_with('/') {
                        fs::create_dir_all(&path).unwrap();
                    } else {
                        fs::create_dir_all(path.parent().unwrap()).unwrap();
                        fs::write(&path, "").unwrap();
                        set_mtime(&path, BUILT - Duration::from_secs(60));
                    }
                    path.display().to_string().replace(' ', "\\ ")
                })
                .collect();
            fs::write(&binary, "").unwrap();
            set_mtime(&binary, BUILT);
            fs::write(
                binary.with_extension("d"),
                format!("{}: {}\n", binary.display(), listed.join(" ")),
            )
            .unwrap();
            Self { dir, binary, target }
        }

        /// Writes `file` (below the build's folder) one minute after the binary was built.
        fn edit(&self, file: &str) -> PathBuf {
            let path = self.dir.path().join(file);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, "changed").unwrap();
            set_mtime(&path, BUILT + Duration::from_secs(60));
            path
        }

        fn newer_source(&self) -> Option<PathBuf> {
            newer_source(&self.binary, &self.target).unwrap()
        }
    }

    fn set_mtime(path: &Path, since_epoch: Duration) {
        fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(SystemTime::UNIX_EPOCH + since_epoch)
            .unwrap();
    }

    #[test]
    fn a_binary_newer_than_every_source_is_current() {
        let build = Build::new(&["src/lib.rs", "services/foo/src/main.rs", "proto/"]);
        assert_eq!(build.newer_source(), None);
    }

    #[test]
    fn a_source_changed_after_the_build_makes_the_binary_stale() {
        let build = Build::new(&["src/lib.rs", "services/foo/src/main.rs"]);
        let edited = build.edit("services/foo/src/main.rs");
        assert_eq!(build.newer_source(), Some(edited));
    }

    #[test]
    fn a_file_below_a_listed_folder_counts() {
        let build = Build::new(&["src/lib.rs", "proto/"]);
        let edited = build.edit("proto/foo/v1/foo.proto");
        assert_eq!(build.newer_source(), Some(edited));
    }

    #[test]
    fn a_deleted_source_makes_the_binary_stale() {
        let build = Build::new(&["src/lib.rs", "src/gone.rs"]);
        let gone = build.dir.path().join("src/gone.rs");
        fs::remove_file(&gone).unwrap();
        assert_eq!(build.newer_source(), Some(gone));
    }

    #[test]
    fn files_the_build_generated_and_files_cargo_does_not_read_are_not_sources() {
        let build = Build::new(&["src/lib.rs", "target/debug/build/out/foo.v1.rs"]);
        build.edit("target/debug/build/out/foo.v1.rs");
        build.edit("services/foo/README.md");
        build.edit("services/foo/Cargo.toml");
        assert_eq!(build.newer_source(), None);
    }

    #[test]
    fn paths_with_spaces_are_read_whole() {
        let build = Build::new(&["my src/lib.rs"]);
        assert_eq!(build.newer_source(), None);
        let edited = build.edit("my src/lib.rs");
        assert_eq!(build.newer_source(), Some(edited));
    }

    #[test]
    fn a_missing_dep_info_file_is_an_error_not_a_pass() {
        let build = Build::new(&["src/lib.rs"]);
        fs::remove_file(build.binary.with_extension("d")).unwrap();
        assert!(newer_source(&build.binary, &build.target).is_err());
    }

    #[test]
    fn the_services_are_the_packages_under_services() {
        let names: Vec<String> = services().into_iter().map(|s| s.binary).collect();
        for expected in ["hello-service", "order-service", "user-service"] {
            assert!(names.iter().any(|n| n == expected), "{expected} in {names:?}");
        }
        assert!(service("user-service").unwrap().stores_data());
        assert!(!service("hello-service").unwrap().stores_data());
        assert_eq!(service("meshwork-e2e"), None);
    }

    #[test]
    fn the_package_name_is_read_from_the_package_table() {
        let manifest = "[workspace]\nname = \"no\"\n\n[package]\nversion = \"0.1.0\"\nname = \"foo-service\"\n\n[dependencies]\nname = \"no\"\n";
        assert_eq!(package_name(manifest).as_deref(), Some("foo-service"));
        assert_eq!(package_name("[dependencies]\nname = \"x\"\n"), None);
    }
}
