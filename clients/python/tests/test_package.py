"""What the built package holds: every service's generated modules, and the retry policy
read from the protos' idempotency levels."""

from __future__ import annotations

import importlib
import json

import pytest

import meshwork_client


@pytest.mark.parametrize("package", ["hello", "user", "order"])
def test_each_proto_package_has_messages_and_stubs(package: str) -> None:
    messages = importlib.import_module(f"meshwork_client.{package}.v1.{package}_pb2")
    stubs = importlib.import_module(f"meshwork_client.{package}.v1.{package}_pb2_grpc")
    service = f"{package.capitalize()}Service"
    assert messages.DESCRIPTOR.package == f"{package}.v1"
    assert hasattr(stubs, f"{service}Stub")


def test_the_reads_are_the_idempotent_methods() -> None:
    assert meshwork_client.idempotent_methods() == [
        ("hello.v1.HelloService", "SayHello"),
        ("order.v1.OrderService", "GetOrder"),
        ("order.v1.OrderService", "ListOrders"),
        ("order.v1.OrderService", "WatchOrders"),
        ("user.v1.UserService", "GetUser"),
        ("user.v1.UserService", "ListUsers"),
    ]


def test_the_service_config_retries_only_unavailable_of_those_methods() -> None:
    (method_config,) = json.loads(meshwork_client.service_config(4))["methodConfig"]
    names = {(name["service"], name["method"]) for name in method_config["name"]}
    assert names == set(meshwork_client.idempotent_methods())
    assert method_config["retryPolicy"]["maxAttempts"] == 4
    assert method_config["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]


def test_one_attempt_means_no_retry_policy() -> None:
    assert json.loads(meshwork_client.service_config(1)) == {"methodConfig": []}
    with pytest.raises(ValueError):
        meshwork_client.service_config(0)
