"""The `google.rpc` details of a failed call (AIP-193), decoded from its trailers.

Every Meshwork error carries an `ErrorInfo`; `INVALID_ARGUMENT` also carries a `BadRequest`
naming each bad field by its path in the request (`email`, `user.email`, `items[0].quantity`).
They travel as a `google.rpc.Status` in the `grpc-status-details-bin` trailer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio

# googleapis-common-protos ships .pyi files but no py.typed marker, so mypy cannot see them;
# what leaves this module is typed here instead.
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]

STATUS_DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True)
class ErrorInfo:
    """`google.rpc.ErrorInfo`: why a call failed (`reason`, UPPER_SNAKE_CASE) and which
    service said so (`domain`, its full name, e.g. `user.v1.UserService`)."""

    reason: str
    domain: str
    metadata: Mapping[str, str] = field(default_factory=dict)


def _trailers(error: grpc.RpcError) -> Iterable[tuple[str, str | bytes]]:
    # A failed call's error is also its Call (sync) or an AioRpcError (asyncio); both
    # carry the trailing metadata. Anything else raised as an RpcError has none.
    if isinstance(error, (grpc.Call, grpc.aio.AioRpcError)):
        return error.trailing_metadata() or ()
    return ()


def _details(error: grpc.RpcError) -> list[Any]:
    for key, value in _trailers(error):
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            return list(status_pb2.Status.FromString(value).details)
    return []


def field_violations(error: grpc.RpcError) -> list[tuple[str, str]]:
    """`(field, description)` of every field a `google.rpc.BadRequest` detail names; empty
    when the error has none."""
    violations: list[tuple[str, str]] = []
    for detail in _details(error):
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            violations += [(str(v.field), str(v.description)) for v in bad_request.field_violations]
    return violations


def error_info(error: grpc.RpcError) -> ErrorInfo | None:
    """The error's `google.rpc.ErrorInfo`, or None when it carries none."""
    for detail in _details(error):
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return ErrorInfo(reason=str(info.reason), domain=str(info.domain), metadata=dict(info.metadata))
    return None
