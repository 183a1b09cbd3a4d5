"""What `connect` adds to a channel, against Python gRPC servers on loopback that record
what they were sent: TLS (the Rust services' TLS is not here yet), the bearer token, the
default deadline, and retries of the idempotent methods only."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field

import grpc
import pytest

import meshwork_client
from meshwork_client import TLS
from meshwork_client.hello.v1 import hello_pb2, hello_pb2_grpc
from meshwork_client.order.v1 import order_pb2, order_pb2_grpc
from meshwork_client.user.v1 import user_pb2, user_pb2_grpc

from conftest import Certificates


# grpcio reports a call without a deadline as an enormous time remaining (or None).
NO_DEADLINE = 10 * 365 * 24 * 3600.0


@dataclass
class Seen:
    """What the servers below were sent, per method."""

    authorization: list[str | None] = field(default_factory=list)
    time_remaining: list[float | None] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, method: str, context: grpc.ServicerContext) -> int:
        """Notes one attempt; returns how many there have been of `method`, this one included."""
        metadata = dict(context.invocation_metadata())
        with self.lock:
            self.authorization.append(metadata.get("authorization"))  # type: ignore[arg-type]
            self.time_remaining.append(context.time_remaining())
            self.attempts[method] = self.attempts.get(method, 0) + 1
            return self.attempts[method]


class Hello(hello_pb2_grpc.HelloServiceServicer):
    def __init__(self, seen: Seen) -> None:
        self.seen = seen

    def SayHello(self, request: hello_pb2.SayHelloRequest, context: grpc.ServicerContext) -> hello_pb2.SayHelloResponse:
        self.seen.record("SayHello", context)
        return hello_pb2.SayHelloResponse(message=f"Hello, {request.name}!")


class FlakyUsers(user_pb2_grpc.UserServiceServicer):
    """Every method's first attempt is UNAVAILABLE; the next ones succeed."""

    def __init__(self, seen: Seen) -> None:
        self.seen = seen

    def _first_fails(self, method: str, context: grpc.ServicerContext) -> None:
        if self.seen.record(method, context) == 1:
            context.abort(grpc.StatusCode.UNAVAILABLE, "not yet")

    def GetUser(self, request: user_pb2.GetUserRequest, context: grpc.ServicerContext) -> user_pb2.GetUserResponse:
        self._first_fails("GetUser", context)
        return user_pb2.GetUserResponse(user=user_pb2.User(id=request.id))

    def CreateUser(
        self, request: user_pb2.CreateUserRequest, context: grpc.ServicerContext
    ) -> user_pb2.CreateUserResponse:
        self._first_fails("CreateUser", context)
        return user_pb2.CreateUserResponse(user=user_pb2.User(id="u1", name=request.name))


class Orders(order_pb2_grpc.OrderServiceServicer):
    def __init__(self, seen: Seen) -> None:
        self.seen = seen

    def WatchOrders(
        self, request: order_pb2.WatchOrdersRequest, context: grpc.ServicerContext
    ) -> Iterator[order_pb2.WatchOrdersResponse]:
        self.seen.record("WatchOrders", context)
        yield order_pb2.WatchOrdersResponse(event_type=order_pb2.ORDER_EVENT_TYPE_CREATED)


@dataclass
class Server:
    address: str
    seen: Seen


def serve(credentials: grpc.ServerCredentials | None) -> Iterator[Server]:
    seen = Seen()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    hello_pb2_grpc.add_HelloServiceServicer_to_server(Hello(seen), server)
    user_pb2_grpc.add_UserServiceServicer_to_server(FlakyUsers(seen), server)
    order_pb2_grpc.add_OrderServiceServicer_to_server(Orders(seen), server)
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    try:
        yield Server(address=f"127.0.0.1:{port}", seen=seen)
    finally:
        server.stop(grace=None)


def server_credentials(certificates: Certificates, *, require_client_cert: bool) -> grpc.ServerCredentials:
    return grpc.ssl_server_credentials(
        [(certificates.server_key.read_bytes(), certificates.server_cert.read_bytes())],
        root_certificates=certificates.ca.read_bytes() if require_client_cert else None,
        require_client_auth=require_client_cert,
    )


@pytest.fixture
def plaintext() -> Iterator[Server]:
    yield from serve(None)


@pytest.fixture
def tls_server(certificates: Certificates) -> Iterator[Server]:
    yield from serve(server_credentials(certificates, require_client_cert=False))


@pytest.fixture
def mtls_server(certificates: Certificates) -> Iterator[Server]:
    yield from serve(server_credentials(certificates, require_client_cert=True))


def say_hello(channel: grpc.Channel) -> str:
    return hello_pb2_grpc.HelloServiceStub(channel).SayHello(hello_pb2.SayHelloRequest(name="Ada")).message


def code_of_hello(channel: grpc.Channel) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as raised:
        say_hello(channel)
    assert isinstance(raised.value, grpc.Call)
    return raised.value.code()


def test_tls_with_a_token_sends_the_bearer_header(tls_server: Server, certificates: Certificates) -> None:
    tls = TLS(ca_file=certificates.ca, server_name=certificates.server_name)
    with meshwork_client.connect(tls_server.address, tls=tls, token="s3cret") as channel:
        assert say_hello(channel) == "Hello, Ada!"
    assert tls_server.seen.authorization == ["Bearer s3cret"]


def test_tls_refuses_a_server_its_ca_did_not_sign(tls_server: Server, certificates: Certificates) -> None:
    tls = TLS(ca_file=certificates.other_ca, server_name=certificates.server_name)
    with meshwork_client.connect(tls_server.address, tls=tls, timeout=10) as channel:
        assert code_of_hello(channel) == grpc.StatusCode.UNAVAILABLE
    assert tls_server.seen.attempts == {}


def test_tls_checks_the_name_the_certificate_is_for(tls_server: Server, certificates: Certificates) -> None:
    # The certificate is for meshwork.test, not for the 127.0.0.1 in the target.
    with meshwork_client.connect(tls_server.address, tls=TLS(ca_file=certificates.ca), timeout=10) as channel:
        assert code_of_hello(channel) == grpc.StatusCode.UNAVAILABLE
    assert tls_server.seen.attempts == {}


def test_mutual_tls_presents_the_client_certificate(mtls_server: Server, certificates: Certificates) -> None:
    with_cert = TLS(
        ca_file=certificates.ca,
        cert_file=certificates.client_cert,
        key_file=certificates.client_key,
        server_name=certificates.server_name,
    )
    without_cert = TLS(ca_file=certificates.ca, server_name=certificates.server_name)
    with meshwork_client.connect(mtls_server.address, tls=with_cert) as channel:
        assert say_hello(channel) == "Hello, Ada!"
    with meshwork_client.connect(mtls_server.address, tls=without_cert, timeout=10) as channel:
        assert code_of_hello(channel) == grpc.StatusCode.UNAVAILABLE
    assert mtls_server.seen.attempts == {"SayHello": 1}


def test_a_client_certificate_needs_its_key() -> None:
    with pytest.raises(ValueError, match="cert_file and key_file"):
        TLS(ca_file="ca.pem", cert_file="client.pem")


def test_plaintext_with_a_token_sends_the_bearer_header(plaintext: Server) -> None:
    with meshwork_client.connect(plaintext.address, token="t0ken") as channel:
        say_hello(channel)
    with meshwork_client.connect(plaintext.address) as channel:
        say_hello(channel)
    assert plaintext.seen.authorization == ["Bearer t0ken", None]


def test_calls_without_a_deadline_get_the_default_and_their_own_wins(plaintext: Server) -> None:
    with meshwork_client.connect(plaintext.address, timeout=5.0) as channel:
        hello = hello_pb2_grpc.HelloServiceStub(channel)
        hello.SayHello(hello_pb2.SayHelloRequest())
        hello.SayHello(hello_pb2.SayHelloRequest(), timeout=60)
    defaulted, own = plaintext.seen.time_remaining
    # The server reads the deadline back from grpc-timeout, which gRPC rounds up to its unit
    # (5.009 s has been seen for 5 s): 5 s, not 60, give or take that rounding.
    assert defaulted is not None and defaulted <= 5.5
    assert own is not None and own > 5.5


def test_a_response_stream_gets_no_default_deadline(plaintext: Server) -> None:
    with meshwork_client.connect(plaintext.address, timeout=5.0) as channel:
        events = list(order_pb2_grpc.OrderServiceStub(channel).WatchOrders(order_pb2.WatchOrdersRequest()))
    assert [event.event_type for event in events] == [order_pb2.ORDER_EVENT_TYPE_CREATED]
    (remaining,) = plaintext.seen.time_remaining
    assert remaining is None or remaining > NO_DEADLINE


def test_an_idempotent_read_is_retried_on_unavailable(plaintext: Server) -> None:
    with meshwork_client.connect(plaintext.address) as channel:
        user = user_pb2_grpc.UserServiceStub(channel).GetUser(user_pb2.GetUserRequest(id="u1")).user
    assert user.id == "u1"
    assert plaintext.seen.attempts == {"GetUser": 2}


def test_a_write_is_not_retried(plaintext: Server) -> None:
    with meshwork_client.connect(plaintext.address) as channel:
        with pytest.raises(grpc.RpcError) as raised:
            user_pb2_grpc.UserServiceStub(channel).CreateUser(user_pb2.CreateUserRequest(name="Ada"))
    assert isinstance(raised.value, grpc.Call)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert plaintext.seen.attempts == {"CreateUser": 1}


def test_max_attempts_one_turns_retries_off(plaintext: Server) -> None:
    with meshwork_client.connect(plaintext.address, max_attempts=1) as channel:
        with pytest.raises(grpc.RpcError):
            user_pb2_grpc.UserServiceStub(channel).GetUser(user_pb2.GetUserRequest(id="u1"))
    assert plaintext.seen.attempts == {"GetUser": 1}


def test_asyncio_twin_has_the_same_defaults(tls_server: Server, plaintext: Server, certificates: Certificates) -> None:
    tls = TLS(ca_file=certificates.ca, server_name=certificates.server_name)

    async def scenario() -> tuple[str, str]:
        async with meshwork_client.aio.connect(tls_server.address, tls=tls, token="s3cret") as channel:
            greeting = (await hello_pb2_grpc.HelloServiceStub(channel).SayHello(hello_pb2.SayHelloRequest(name="Ada"))).message
        async with meshwork_client.aio.connect(plaintext.address, token="t0ken", timeout=5.0) as channel:
            user = (await user_pb2_grpc.UserServiceStub(channel).GetUser(user_pb2.GetUserRequest(id="u1"))).user
        return greeting, user.id

    assert asyncio.run(scenario()) == ("Hello, Ada!", "u1")
    assert tls_server.seen.authorization == ["Bearer s3cret"]
    assert plaintext.seen.attempts == {"GetUser": 2}
    assert plaintext.seen.authorization == ["Bearer t0ken", "Bearer t0ken"]
    # 5 s give or take gRPC's rounding of grpc-timeout (5.009 s seen), as in the sync test.
    assert all(remaining is not None and remaining <= 5.5 for remaining in plaintext.seen.time_remaining)
