"""The typed stubs reach a caller: `mypy --strict` accepts right use and finds wrong use."""

from __future__ import annotations

from pathlib import Path

import pytest
from mypy import api

CALLER = """
import grpc
import meshwork_client
from meshwork_client.user.v1 import user_pb2, user_pb2_grpc

def email_of(channel: grpc.Channel, user_id: str) -> str:
    users = user_pb2_grpc.UserServiceStub(channel)
    return users.GetUser(user_pb2.GetUserRequest(id=user_id)).user.email

def reasons(error: grpc.RpcError) -> list[str]:
    info = meshwork_client.error_info(error)
    return [field for field, _ in meshwork_client.field_violations(error)] + ([info.reason] if info else [])
"""

MISTAKES = """
import grpc
from meshwork_client.user.v1 import user_pb2, user_pb2_grpc

def mistakes(channel: grpc.Channel) -> int:
    users = user_pb2_grpc.UserServiceStub(channel)
    users.GetUser(user_pb2.GetUserRequest(id=42))
    return users.GetUser(user_pb2.GetUserRequest(id="u1")).user.email
"""


@pytest.fixture(scope="module")
def mypy_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Shared, so the second run does not analyse grpc and protobuf's stubs again.
    return tmp_path_factory.mktemp("mypy-cache")


def mypy_strict(folder: Path, cache: Path, source: str) -> tuple[str, int]:
    caller = folder / "caller.py"
    caller.write_text(source)
    report, errors, status = api.run(["--strict", "--cache-dir", str(cache), str(caller)])
    return report + errors, status


def test_mypy_strict_accepts_a_correct_caller(tmp_path: Path, mypy_cache: Path) -> None:
    report, status = mypy_strict(tmp_path, mypy_cache, CALLER)
    assert status == 0, report


def test_mypy_strict_finds_a_wrong_field_type_and_a_wrong_result_type(tmp_path: Path, mypy_cache: Path) -> None:
    report, status = mypy_strict(tmp_path, mypy_cache, MISTAKES)
    assert status == 1, report
    assert 'Argument "id" to "GetUserRequest" has incompatible type "int"' in report
    assert 'Incompatible return value type (got "str", expected "int")' in report
