"""What both `connect`s share: the retry service config, credentials and channel options.

Which methods are retried is read from the generated descriptors, not kept here: a method
whose `.proto` declares an `idempotency_level` (the reads say `NO_SIDE_EFFECTS`) is safe to
send again, the rule the Rust client stack follows too.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.protobuf.descriptor import FileDescriptor
from google.protobuf.descriptor_pb2 import MethodOptions

# Retried: only UNAVAILABLE, the one code that says the call did not run (CONTRACT.md).
RETRYABLE_CODES = ("UNAVAILABLE",)
_SAFE_TO_REPEAT = (MethodOptions.NO_SIDE_EFFECTS, MethodOptions.IDEMPOTENT)


@dataclass(frozen=True)
class TLS:
    """How to reach a service over TLS.

    `ca_file` is the PEM bundle that signed the server's certificate; `cert_file` and
    `key_file`, together, are this client's own certificate for mutual TLS; `server_name`
    is the name to verify the certificate against when it is not the target's host (e.g.
    connecting to 127.0.0.1 or through a port-forward).
    """

    ca_file: str | Path
    cert_file: str | Path | None = None
    key_file: str | Path | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("TLS: cert_file and key_file go together (mutual TLS needs both)")

    def credentials(self) -> grpc.ChannelCredentials:
        def read(path: str | Path | None) -> bytes | None:
            return None if path is None else Path(path).read_bytes()

        return grpc.ssl_channel_credentials(
            root_certificates=read(self.ca_file),
            private_key=read(self.key_file),
            certificate_chain=read(self.cert_file),
        )


def _generated_files() -> Iterator[FileDescriptor]:
    package = importlib.import_module(__package__ or "meshwork_client")
    for module in pkgutil.walk_packages(package.__path__, prefix=package.__name__ + "."):
        if module.name.endswith("_pb2"):
            yield importlib.import_module(module.name).DESCRIPTOR


def idempotent_methods() -> list[tuple[str, str]]:
    """`(full service name, method)` of every generated method declared safe to repeat."""
    return sorted(
        (service.full_name, method.name)
        for file in _generated_files()
        for service in file.services_by_name.values()
        for method in service.methods
        if method.GetOptions().idempotency_level in _SAFE_TO_REPEAT
    )


def service_config(max_attempts: int) -> str:
    """gRPC's own retries (gRFC A6) for the idempotent methods, as a service config."""
    if max_attempts < 1:
        raise ValueError("max_attempts counts the first attempt: at least 1")
    names = [{"service": service, "method": method} for service, method in idempotent_methods()]
    config = {
        "methodConfig": [
            {
                "name": names,
                "retryPolicy": {
                    # gRPC caps this at 5 whatever is asked; 1 would be no retry, which the
                    # config format refuses, so then the policy is left out altogether.
                    "maxAttempts": max_attempts,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": list(RETRYABLE_CODES),
                },
            }
        ]
        if max_attempts > 1 and names
        else []
    }
    return json.dumps(config)


def channel_options(max_attempts: int) -> list[tuple[str, str | int]]:
    return [
        ("grpc.enable_retries", 1),
        ("grpc.service_config", service_config(max_attempts)),
    ]


def bearer(token: str) -> tuple[str, str]:
    return ("authorization", f"Bearer {token}")
