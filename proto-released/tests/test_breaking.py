"""`buf breaking` holds proto/ to the released protos (proto-released/v1, see the README's
versioning policy): these tests change a copy of proto/, with the repository's buf.yaml, and
check which changes it lets through. `make lint` runs the same check on proto/ itself."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[2]
RELEASED = REPOSITORY / "proto-released" / "v1"
BUF = os.environ.get("BUF", str(REPOSITORY / ".tools/npm/node_modules/.bin/buf"))

USER = "user/v1/user.proto"
ORDER = "order/v1/order.proto"


def buf_breaking(edits: dict[str, tuple[str, str]], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`buf breaking` of proto/ with each `{file: (old, new)}` edit applied, against the release."""
    shutil.copy(REPOSITORY / "buf.yaml", tmp_path / "buf.yaml")
    for source in (REPOSITORY / "proto").rglob("*.proto"):
        copy = tmp_path / "proto" / source.relative_to(REPOSITORY / "proto")
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, copy)
    for file, (old, new) in edits.items():
        path = tmp_path / "proto" / file
        text = path.read_text()
        assert old in text, f"{file} no longer has {old!r}: update this test"
        path.write_text(text.replace(old, new, 1))
    return subprocess.run(
        [BUF, "breaking", "proto", "--against", str(RELEASED)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(autouse=True)
def buf_present() -> None:
    if not Path(BUF).exists():
        pytest.fail(f"{BUF} is missing: `make tools` installs it")


COMPATIBLE = {
    "unchanged": {},
    "a new field": {
        USER: ("  google.protobuf.Timestamp update_time = 5;\n}", "  google.protobuf.Timestamp update_time = 5;\n  // New.\n  string nickname = 6;\n}")
    },
    "a new method": {
        ORDER: (
            "  rpc CancelOrder(CancelOrderRequest) returns (CancelOrderResponse);",
            "  rpc CancelOrder(CancelOrderRequest) returns (CancelOrderResponse);\n"
            "  // New.\n  rpc CountOrders(GetOrderRequest) returns (GetOrderResponse);",
        )
    },
}

BREAKING = {
    "a renumbered field": ({USER: ("string email = 3;", "string email = 6;")}, 'field "3" with name "email"'),
    "a removed field": ({USER: ("  string email = 3;\n", "  reserved 3;\n")}, 'field "3" with name "email"'),
    "a changed field type": ({ORDER: ("int64 total_cents = 4;", "int32 total_cents = 4;")}, "total_cents"),
    "a renamed field": ({ORDER: ("string request_id = 3;", "string idempotency_key = 3;")}, "request_id"),
    "a removed method": (
        {ORDER: ("  rpc CancelOrder(CancelOrderRequest) returns (CancelOrderResponse);\n", "")},
        'RPC "CancelOrder"',
    ),
    "a method made streaming": (
        {ORDER: ("returns (GetOrderResponse)", "returns (stream GetOrderResponse)")},
        "GetOrder",
    ),
}


@pytest.mark.parametrize("edits", COMPATIBLE.values(), ids=COMPATIBLE.keys())
def test_compatible_changes_pass(edits: dict[str, tuple[str, str]], tmp_path: Path) -> None:
    result = buf_breaking(edits, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("edits,named", BREAKING.values(), ids=BREAKING.keys())
def test_breaking_changes_fail(edits: dict[str, tuple[str, str]], named: str, tmp_path: Path) -> None:
    result = buf_breaking(edits, tmp_path)
    assert result.returncode != 0, "buf breaking let a breaking change through"
    assert named in result.stdout, result.stdout + result.stderr
