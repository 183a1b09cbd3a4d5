"""`connect` for asyncio: the `grpc.aio` twin of `meshwork_client.connect`, same defaults.

    async with meshwork_client.aio.connect("localhost:50052") as channel:
        users = UserServiceStub(channel)
        reply = await users.GetUser(GetUserRequest(id=user_id))
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Iterable
from typing import Any

import grpc
import grpc.aio

from ._options import TLS, bearer, channel_options

__all__ = ["TLS", "connect"]


class _Defaults:
    """A deadline for calls that set none, and the token on a plaintext channel."""

    def __init__(self, timeout: float | None, token: str | None) -> None:
        self._timeout = timeout
        self._metadata = [bearer(token)] if token is not None else []

    def details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = details.metadata
        if self._metadata:
            metadata = grpc.aio.Metadata(*(metadata or ()), *self._metadata)
        return grpc.aio.ClientCallDetails(
            method=details.method,
            timeout=details.timeout if details.timeout is not None else self._timeout,
            metadata=metadata,
            credentials=details.credentials,
            wait_for_ready=details.wait_for_ready,
        )


class _UnaryUnary(_Defaults, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(self.details(client_call_details), request)


class _StreamUnary(_Defaults, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(
        self, continuation: Any, client_call_details: Any, request_iterator: AsyncIterable[Any] | Iterable[Any]
    ) -> Any:
        return await continuation(self.details(client_call_details), request_iterator)


class _UnaryStream(_Defaults, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(self.details(client_call_details), request)


class _StreamStream(_Defaults, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(
        self, continuation: Any, client_call_details: Any, request_iterator: AsyncIterable[Any] | Iterable[Any]
    ) -> Any:
        return await continuation(self.details(client_call_details), request_iterator)


def connect(
    target: str,
    *,
    tls: TLS | None = None,
    token: str | None = None,
    timeout: float | None = 5.0,
    stream_timeout: float | None = None,
    max_attempts: int = 3,
) -> grpc.aio.Channel:
    """`meshwork_client.connect` for asyncio; see it for the arguments."""
    options = channel_options(max_attempts)
    plaintext_token = token if tls is None else None
    interceptors: list[grpc.aio.ClientInterceptor] = [
        _UnaryUnary(timeout, plaintext_token),
        _StreamUnary(timeout, plaintext_token),
        _UnaryStream(stream_timeout, plaintext_token),
        _StreamStream(stream_timeout, plaintext_token),
    ]
    if tls is None:
        return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
    if tls.server_name is not None:
        options.append(("grpc.ssl_target_name_override", tls.server_name))
    credentials = tls.credentials()
    if token is not None:
        credentials = grpc.composite_channel_credentials(credentials, grpc.access_token_call_credentials(token))
    return grpc.aio.secure_channel(target, credentials, options=options, interceptors=interceptors)
