"""meshwork_client against the real services: what a team's code would do."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import meshwork_client
from meshwork_client.hello.v1 import hello_pb2, hello_pb2_grpc
from meshwork_client.order.v1 import order_pb2, order_pb2_grpc
from meshwork_client.user.v1 import user_pb2, user_pb2_grpc

from conftest import Mesh


def new_user(channel: grpc.Channel, name: str = "Ada") -> user_pb2.User:
    users = user_pb2_grpc.UserServiceStub(channel)
    email = f"{name.lower()}.{uuid.uuid4().hex}@example.com"
    return users.CreateUser(user_pb2.CreateUserRequest(name=name, email=email)).user


def an_order(user_id: str) -> order_pb2.CreateOrderRequest:
    return order_pb2.CreateOrderRequest(
        user_id=user_id,
        items=[order_pb2.OrderItem(sku="book", quantity=2, unit_price_cents=1250)],
        request_id=uuid.uuid4().hex,
    )


def test_say_hello(mesh: Mesh) -> None:
    with meshwork_client.connect(mesh.hello.address) as channel:
        reply = hello_pb2_grpc.HelloServiceStub(channel).SayHello(hello_pb2.SayHelloRequest(name="Ada"))
    assert reply.message == "Hello, Ada!"


def test_create_user_then_read_it_back(mesh: Mesh) -> None:
    with meshwork_client.connect(mesh.user.address) as channel:
        created = new_user(channel)
        fetched = user_pb2_grpc.UserServiceStub(channel).GetUser(user_pb2.GetUserRequest(id=created.id)).user
    assert created.id
    assert (fetched.id, fetched.name, fetched.email) == (created.id, "Ada", created.email)
    assert fetched.create_time.seconds > 0


def test_create_order_for_a_user_totals_it(mesh: Mesh) -> None:
    with meshwork_client.connect(mesh.user.address) as users, meshwork_client.connect(mesh.order.address) as orders:
        user = new_user(users)
        order = order_pb2_grpc.OrderServiceStub(orders).CreateOrder(an_order(user.id)).order
    assert order.user_id == user.id
    assert order.total_cents == 2500
    assert order.status == order_pb2.ORDER_STATUS_PENDING


def test_watch_orders_streams_an_order_created_after_it_started(mesh: Mesh) -> None:
    with meshwork_client.connect(mesh.user.address) as users, meshwork_client.connect(mesh.order.address) as channel:
        user = new_user(users)
        orders = order_pb2_grpc.OrderServiceStub(channel)
        watch = orders.WatchOrders(order_pb2.WatchOrdersRequest(user_id=user.id), timeout=30)
        # The response headers come once the server has subscribed: from then on every
        # change is streamed, so nothing created below can be missed.
        watch.initial_metadata()
        created = orders.CreateOrder(an_order(user.id)).order
        event = next(watch)
        watch.cancel()
    assert event.event_type == order_pb2.ORDER_EVENT_TYPE_CREATED
    assert event.order.id == created.id


def test_every_service_reports_serving(mesh: Mesh) -> None:
    for service, name in [
        (mesh.hello, "hello.v1.HelloService"),
        (mesh.user, "user.v1.UserService"),
        (mesh.order, "order.v1.OrderService"),
    ]:
        with meshwork_client.connect(service.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for asked in ("", name):
                reply = health.Check(health_pb2.HealthCheckRequest(service=asked))
                assert reply.status == health_pb2.HealthCheckResponse.SERVING, (service.name, asked)


def test_a_validation_error_names_each_bad_field(mesh: Mesh) -> None:
    with meshwork_client.connect(mesh.user.address) as channel:
        with pytest.raises(grpc.RpcError) as raised:
            user_pb2_grpc.UserServiceStub(channel).CreateUser(user_pb2.CreateUserRequest(name="", email="nope"))
    error = raised.value
    assert isinstance(error, grpc.Call)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert {field for field, _ in meshwork_client.field_violations(error)} == {"name", "email"}
    assert all(description for _, description in meshwork_client.field_violations(error))
    info = meshwork_client.error_info(error)
    assert info is not None
    assert (info.reason, info.domain) == ("INVALID_ARGUMENT", "user.v1.UserService")


def test_an_order_item_is_named_by_its_path(mesh: Mesh) -> None:
    with meshwork_client.connect(mesh.order.address) as channel:
        request = an_order("someone")
        request.items[0].quantity = 0
        with pytest.raises(grpc.RpcError) as raised:
            order_pb2_grpc.OrderServiceStub(channel).CreateOrder(request)
    assert [field for field, _ in meshwork_client.field_violations(raised.value)] == ["items[0].quantity"]


def test_an_error_without_field_violations_still_has_its_error_info(mesh: Mesh) -> None:
    with meshwork_client.connect(mesh.user.address) as channel:
        first = new_user(channel)
        with pytest.raises(grpc.RpcError) as raised:
            user_pb2_grpc.UserServiceStub(channel).CreateUser(
                user_pb2.CreateUserRequest(name="Again", email=first.email)
            )
    assert meshwork_client.field_violations(raised.value) == []
    info = meshwork_client.error_info(raised.value)
    assert info is not None and info.reason == "EMAIL_ALREADY_EXISTS"


def test_asyncio_client_creates_reads_and_decodes_errors(mesh: Mesh) -> None:
    async def scenario() -> tuple[user_pb2.User, user_pb2.User, list[tuple[str, str]]]:
        async with meshwork_client.aio.connect(mesh.user.address) as channel:
            users = user_pb2_grpc.UserServiceStub(channel)
            email = f"grace.{uuid.uuid4().hex}@example.com"
            created = (await users.CreateUser(user_pb2.CreateUserRequest(name="Grace", email=email))).user
            fetched = (await users.GetUser(user_pb2.GetUserRequest(id=created.id))).user
            try:
                await users.CreateUser(user_pb2.CreateUserRequest(name="Grace", email="nope"))
            except grpc.aio.AioRpcError as error:
                return created, fetched, meshwork_client.field_violations(error)
            raise AssertionError("a bad email was accepted")

    created, fetched, violations = asyncio.run(scenario())
    assert fetched == created
    assert [field for field, _ in violations] == ["email"]
