"""`connect`: a `grpc.Channel` to one service with the mesh's client defaults."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, TypeVar

import grpc

from ._options import TLS, bearer, channel_options

Request = TypeVar("Request")
Response = TypeVar("Response")


class _CallDetails(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None


class _Defaults(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Fills in what a call did not say: a deadline, and the token on a plaintext channel
    (where gRPC refuses call credentials)."""

    def __init__(self, timeout: float | None, stream_timeout: float | None, token: str | None) -> None:
        self._timeout = timeout
        self._stream_timeout = stream_timeout
        self._metadata = [bearer(token)] if token is not None else []

    def _details(self, details: grpc.ClientCallDetails, default_timeout: float | None) -> grpc.ClientCallDetails:
        metadata = list(details.metadata or []) + self._metadata
        return _CallDetails(  # type: ignore[return-value]
            method=details.method,
            timeout=details.timeout if details.timeout is not None else default_timeout,
            metadata=metadata or None,
            credentials=details.credentials,
            wait_for_ready=getattr(details, "wait_for_ready", None),
            compression=getattr(details, "compression", None),
        )

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: grpc.ClientCallDetails, request: Any
    ) -> Any:
        return continuation(self._details(client_call_details, self._timeout), request)

    def intercept_stream_unary(
        self, continuation: Callable[..., Any], client_call_details: grpc.ClientCallDetails, request_iterator: Iterator[Any]
    ) -> Any:
        return continuation(self._details(client_call_details, self._timeout), request_iterator)

    def intercept_unary_stream(
        self, continuation: Callable[..., Any], client_call_details: grpc.ClientCallDetails, request: Any
    ) -> Any:
        return continuation(self._details(client_call_details, self._stream_timeout), request)

    def intercept_stream_stream(
        self, continuation: Callable[..., Any], client_call_details: grpc.ClientCallDetails, request_iterator: Iterator[Any]
    ) -> Any:
        return continuation(self._details(client_call_details, self._stream_timeout), request_iterator)


def connect(
    target: str,
    *,
    tls: TLS | None = None,
    token: str | None = None,
    timeout: float | None = 5.0,
    stream_timeout: float | None = None,
    max_attempts: int = 3,
) -> grpc.Channel:
    """A channel to one service, `host:port` (e.g. `localhost:50052`); use the generated
    stubs on it as usual, `UserServiceStub(connect("localhost:50052"))`.

    - `timeout`: seconds allowed to every call that returns one response and sets no
      deadline of its own. Calls that stream responses (`WatchOrders`) are meant to stay
      open, so they get `stream_timeout`, none by default.
    - `max_attempts` (first included, at most 5): the methods the protos mark safe to
      repeat (`idempotency_level`) are retried by gRPC itself on `UNAVAILABLE`; writes never.
    - `tls`: TLS (and mutual TLS with a client certificate); plaintext without it.
    - `token`: sent as `authorization: Bearer <token>` on every call.

    Close the channel when done (`with connect(...) as channel:`).
    """
    options = channel_options(max_attempts)
    interceptor = _Defaults(timeout, stream_timeout, token if tls is None else None)
    if tls is None:
        channel = grpc.insecure_channel(target, options=options)
    else:
        if tls.server_name is not None:
            options.append(("grpc.ssl_target_name_override", tls.server_name))
        credentials = tls.credentials()
        if token is not None:
            credentials = grpc.composite_channel_credentials(credentials, grpc.access_token_call_credentials(token))
        channel = grpc.secure_channel(target, credentials, options=options)
    return grpc.intercept_channel(channel, interceptor)
