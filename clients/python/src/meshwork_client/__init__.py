"""Python clients of the Meshwork services.

- The generated modules, one package per protobuf package: `meshwork_client.hello.v1`,
  `meshwork_client.user.v1`, `meshwork_client.order.v1`, each with `*_pb2` (messages) and
  `*_pb2_grpc` (stubs), typed (`py.typed`, mypy-protobuf stubs). They are generated from
  the repository's `proto/` when the package is built; none is kept in source control.
- `connect(target, ...)`: a `grpc.Channel` to one service with the mesh's client defaults
  (a deadline for every call, retries of the idempotent reads, TLS, bearer token);
  `meshwork_client.aio.connect` is its asyncio twin.
- `field_violations(error)`, `error_info(error)`: the `google.rpc` details of a failed call.

    from meshwork_client import connect
    from meshwork_client.user.v1 import user_pb2, user_pb2_grpc

    with connect("localhost:50052") as channel:
        users = user_pb2_grpc.UserServiceStub(channel)
        user = users.CreateUser(user_pb2.CreateUserRequest(name="Ada", email="ada@example.com")).user
"""

from . import aio
from ._channel import connect
from ._options import TLS, idempotent_methods, service_config
from .errors import ErrorInfo, error_info, field_violations

__all__ = [
    "TLS",
    "ErrorInfo",
    "aio",
    "connect",
    "error_info",
    "field_violations",
    "idempotent_methods",
    "service_config",
]
