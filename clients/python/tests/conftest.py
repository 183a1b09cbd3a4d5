"""Test kit: the real service binaries on loopback port 0, each in its own temporary folder
(so its own SQLite database), and a CA with certificates for the TLS tests.

The binaries are cargo's: `target/debug/<name>` of this repository, or of
`$MESHWORK_TARGET_DIR`. `make test` builds them first and sets MESHWORK_REQUIRE_BINARIES=1,
so that there a missing binary fails the run; elsewhere (the package's tests run on their
own) the tests that need them are skipped with the command that builds them.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

REPOSITORY = Path(__file__).resolve().parents[3]
START_TIMEOUT = 10.0

T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = START_TIMEOUT) -> T:
    """Polls `probe` until it returns something other than None, for at most `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def binary(name: str) -> Path:
    target = Path(os.environ.get("MESHWORK_TARGET_DIR", REPOSITORY / "target"))
    path = target / "debug" / name
    if not path.exists():
        message = f"{path} is missing: run `cargo build --workspace --bins` (or `make test`, which builds first)"
        if os.environ.get("MESHWORK_REQUIRE_BINARIES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


class Service:
    """One running service binary; its JSON log lines are collected as they come."""

    def __init__(self, name: str, workdir: Path, env: dict[str, str] | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self._lines: list[dict[str, object]] = []
        self._lock = threading.Lock()
        self.process = subprocess.Popen(
            [binary(name)],
            cwd=workdir,
            env={
                "PATH": os.environ.get("PATH", ""),
                "LISTEN_ADDR": "127.0.0.1:0",
                "METRICS_ADDR": "127.0.0.1:0",
                "LOG_FORMAT": "json",
                "RUST_LOG": "info",
                **(env or {}),
            },
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._collect, daemon=True).start()
        self.address = wait_for(f"{name} to listen", self._listening)

    def _collect(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = {"message": line.rstrip()}
            with self._lock:
                self._lines.append(record)

    def _listening(self) -> str | None:
        if self.process.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.process.returncode}: {self.log()}")
        with self._lock:
            for record in self._lines:
                if record.get("message") == "listening":
                    return str(record["grpc_addr"])
        return None

    def log(self) -> str:
        with self._lock:
            return "\n".join(json.dumps(record) for record in self._lines)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class Mesh:
    hello: Service
    user: Service
    order: Service


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Mesh]:
    """hello, user and order, order calling this user; fresh databases."""
    started: list[Service] = []
    try:
        user = Service("user-service", tmp_path / "user")
        started.append(user)
        order = Service("order-service", tmp_path / "order", {"USER_SERVICE_URL": f"http://{user.address}"})
        started.append(order)
        hello = Service("hello-service", tmp_path / "hello")
        started.append(hello)
        yield Mesh(hello=hello, user=user, order=order)
    finally:
        for service in reversed(started):
            service.stop()


@dataclass
class Certificates:
    """PEM files: a CA, a server certificate it signed for `server_name` only,
    a client certificate it signed, and a second CA that signed nothing here."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    server_name: str = "meshwork.test"


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    sans: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, signing_key = (issuer[0].subject, issuer[1]) if issuer else (name, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def _write(path: Path, certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey | None = None) -> None:
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        path.with_suffix(".key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    folder = tmp_path_factory.mktemp("pki")
    ca_key, other_key = _key(), _key()
    ca = _certificate("meshwork test CA", ca_key, None)
    server_key, client_key = _key(), _key()
    # Valid for a name only, not for 127.0.0.1: a client must say which name it expects.
    sans: list[x509.GeneralName] = [x509.DNSName("meshwork.test")]
    _write(folder / "ca.pem", ca)
    _write(folder / "other-ca.pem", _certificate("another CA", other_key, None))
    _write(folder / "server.pem", _certificate("meshwork.test", server_key, (ca, ca_key), sans), server_key)
    _write(folder / "client.pem", _certificate("a client", client_key, (ca, ca_key)), client_key)
    return Certificates(
        ca=folder / "ca.pem",
        server_cert=folder / "server.pem",
        server_key=folder / "server.key",
        client_cert=folder / "client.pem",
        client_key=folder / "client.key",
        other_ca=folder / "other-ca.pem",
    )
