"""TLS verification is on by default: a server with a self-signed certificate is refused by
both hooks (before any request reaches it) unless the connection extra `ca_bundle` names a
bundle that holds its certificate."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _fake_api import TOKEN, FakeApi, Reply, task_json
from _fake_clock import FakeClock
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from rce_lib.errors import ApiError
from rce_lib.hooks.retry import RetryPolicy
from rce_lib.hooks.sddc_api import SddcApiAsyncHook, SddcApiHook

ONCE = RetryPolicy("once", attempts=1, deadline_s=10.0, base_s=0.01, cap_s=0.01)


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rce-test-sim")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "sim.pem", directory / "sim.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


@pytest.fixture
def tls_api(tmp_path: Path) -> Iterator[tuple[FakeApi, Path]]:
    cert, key = _self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = FakeApi()
    server.server.socket = context.wrap_socket(server.server.socket, server_side=True)
    server.start()
    yield server, cert
    server.stop()


@pytest.fixture
def tls_connect(tls_api: tuple[FakeApi, Path], monkeypatch: pytest.MonkeyPatch) -> Any:
    # As on many hosts (and in this project's containers): a system bundle named in the
    # environment, which requests would otherwise prefer to the connection's ca_bundle.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ssl.get_default_verify_paths().openssl_cafile)

    def _connect(**extra: Any) -> None:
        conn = {
            "conn_type": "http",
            "host": "127.0.0.1",
            "port": tls_api[0].port,
            "schema": "https",
            "password": TOKEN,
            "extra": {"connect_timeout": 2, "read_timeout": 5, **extra},
        }
        monkeypatch.setenv("AIRFLOW_CONN_SDDC_API", json.dumps(conn))

    return _connect


def test_sync_hook_refuses_a_self_signed_server_by_default(
    tls_api: tuple[FakeApi, Path], tls_connect: Any, clock: FakeClock
) -> None:
    tls_connect()
    with pytest.raises(ApiError) as info:
        SddcApiHook(sleep=clock.sleep, clock=clock, reads=ONCE).get_task("t-1")
    assert not info.value.retryable and "SSL" in str(info.value)
    assert tls_api[0].seen == []  # nothing, the token included, was sent


def test_async_hook_refuses_a_self_signed_server_by_default(
    tls_api: tuple[FakeApi, Path], tls_connect: Any, clock: FakeClock
) -> None:
    tls_connect()
    hook = SddcApiAsyncHook(sleep=clock.asleep, clock=clock, policy=ONCE)
    with pytest.raises(ApiError) as info:
        asyncio.run(hook.get_task("t-1"))
    assert not info.value.retryable
    assert tls_api[0].seen == []


def test_both_hooks_trust_the_server_with_its_ca_bundle(
    tls_api: tuple[FakeApi, Path], tls_connect: Any, clock: FakeClock
) -> None:
    api, cert = tls_api
    tls_connect(ca_bundle=str(cert))
    api.script(Reply(200, task_json()), Reply(200, task_json()))
    assert SddcApiHook(sleep=clock.sleep, clock=clock).get_task("t-1").id == "t-1"
    assert asyncio.run(SddcApiAsyncHook(sleep=clock.asleep, clock=clock).get_task("t-1")).id == "t-1"
    assert [s.headers["Authorization"] for s in api.seen] == [f"Bearer {TOKEN}"] * 2
