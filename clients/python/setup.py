"""The build hook of meshwork-client: the generated modules are made here, at build time.

Nothing generated is committed. `build_py` runs `grpc_tools.protoc` over every `.proto`
below the proto root (found, not listed, like `proto/build.rs` does for Rust) and writes
messages (`*_pb2.py`), service stubs (`*_pb2_grpc.py`) and their typed stubs (`*.pyi`,
by mypy-protobuf) into the package being built. Everything else is in pyproject.toml.

Where the protos are, first found wins:
1. `$MESHWORK_PROTO_DIR`;
2. `proto/` beside this file: an sdist carries its own copy (see `SdistWithProtos`), so a
   wheel built from the sdist in a temporary directory still finds them;
3. `../../proto`: the repository, for `pip install ./clients/python`.

Why the protos are staged below a `meshwork_client/` folder before compiling: protoc writes
imports from the include root (`from user.v1 import user_pb2`), and the modules must live
in `meshwork_client.user.v1`, so the include root is made to start there.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
import tempfile
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = Path(__file__).resolve().parent
PACKAGE = "meshwork_client"


def proto_root() -> Path:
    candidates = [Path(os.environ["MESHWORK_PROTO_DIR"])] if "MESHWORK_PROTO_DIR" in os.environ else []
    candidates += [HERE / "proto", HERE.parent.parent / "proto"]
    for candidate in candidates:
        if any(candidate.rglob("*.proto")):
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise SystemExit(f"meshwork-client: no .proto files found (tried {tried}); set MESHWORK_PROTO_DIR")


def proto_files(root: Path) -> list[Path]:
    return sorted(path.relative_to(root) for path in root.rglob("*.proto"))


def plugin(name: str, entry: str, into: Path) -> Path:
    """A protoc plugin executable: the installed script, or a wrapper that runs the same
    entry point with this interpreter (a build environment's scripts may not be on PATH)."""
    found = shutil.which(name)
    if found:
        return Path(found)
    module, function = entry.split(":")
    wrapper = into / name
    wrapper.write_text(f"#!{sys.executable}\nfrom {module} import {function}\n{function}()\n")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return wrapper


def generate(out: Path) -> None:
    from grpc_tools import protoc  # a build requirement, so imported only when building

    root = proto_root()
    files = proto_files(root)
    with tempfile.TemporaryDirectory() as scratch:
        staged = Path(scratch) / "include"
        for file in files:
            target = staged / PACKAGE / file
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / file, target)
        mypy = plugin("protoc-gen-mypy", "mypy_protobuf.main:main", Path(scratch))
        mypy_grpc = plugin("protoc-gen-mypy_grpc", "mypy_protobuf.main:grpc", Path(scratch))
        well_known = Path(protoc.__file__).parent / "_proto"
        args = [
            "grpc_tools.protoc",
            f"-I{staged}",
            f"-I{well_known}",
            f"--plugin=protoc-gen-mypy={mypy}",
            f"--plugin=protoc-gen-mypy_grpc={mypy_grpc}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            f"--mypy_out={out}",
            f"--mypy_grpc_out={out}",
            *(f"{PACKAGE}/{file.as_posix()}" for file in files),
        ]
        if protoc.main(args) != 0:
            raise SystemExit(f"grpc_tools.protoc failed on {root}")
    # protoc writes modules, not packages: every folder it made becomes one.
    for file in files:
        for folder in (out / PACKAGE / file).parents:
            if folder == out / PACKAGE:
                break
            (folder / "__init__.py").touch()


class BuildPyWithProtos(build_py):
    """build_py, then the generated modules into the same build tree."""

    def run(self) -> None:
        super().run()
        if not self.dry_run:
            # A reused build tree must not keep the modules of a .proto that is gone.
            for stale in (Path(self.build_lib) / PACKAGE).rglob("*_pb2*.py*"):
                stale.unlink()
            generate(Path(self.build_lib))


class SdistWithProtos(sdist):
    """An sdist that carries the protos it was made from, under `proto/`."""

    def make_release_tree(self, base_dir: str, files: list[str]) -> None:
        super().make_release_tree(base_dir, files)
        root = proto_root()
        for file in proto_files(root):
            target = Path(base_dir) / "proto" / file
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / file, target)


setup(cmdclass={"build_py": BuildPyWithProtos, "sdist": SdistWithProtos})
