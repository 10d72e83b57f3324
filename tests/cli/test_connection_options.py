"""Tests for shipkit.cli._connection_options: every auth mode from the command line and the environment."""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import nkeys
import pytest
from apps.cli_process import ShipkitProcess, child_env
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from shipkit.cli import main
from shipkit.cli._connection_options import CONNECTION_ENV_VARS
from shipkit.server import NatsServer

PASSWORD = "s3cr:et@x"  # needs percent-encoding in a URL
TOKEN = "tok-7d1f0c5e"


def _cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run `shipkit ARGS` in-process without inheriting SHIPKIT_* connection variables."""
    clean = {name: None for name in CONNECTION_ENV_VARS} | {"NATS_URL": None}
    result = CliRunner().invoke(main, list(args), env={**clean, **(env or {})}, catch_exceptions=False)
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def server_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory for this module's server stores, configs and certificates."""
    return tmp_path_factory.mktemp("auth")


def _server(directory: Path, name: str, args: list[str]) -> Iterator[NatsServer]:
    server = NatsServer(store_dir=directory / name, extra_args=args)
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="module")
def password_server(server_dir: Path) -> Iterator[NatsServer]:
    """A server that wants user ada with PASSWORD."""
    yield from _server(server_dir, "pw", ["--user", "ada", "--pass", PASSWORD])


@pytest.fixture(scope="module")
def token_server(server_dir: Path) -> Iterator[NatsServer]:
    """A server that wants TOKEN."""
    yield from _server(server_dir, "token", ["--auth", TOKEN])


@pytest.fixture(scope="module")
def nkey_seed_file(server_dir: Path) -> Path:
    """A fresh user nkey seed (from the nkeys package) in a file."""
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    path = server_dir / "user.nk"
    path.write_bytes(seed)
    return path


@pytest.fixture(scope="module")
def nkey_server(server_dir: Path, nkey_seed_file: Path) -> Iterator[NatsServer]:
    """A server that accepts only the nkey of ``nkey_seed_file``."""
    public = nkeys.from_seed(bytearray(nkey_seed_file.read_bytes())).public_key.decode()
    conf = server_dir / "nkey.conf"
    conf.write_text(f"authorization {{ users = [ {{ nkey: {public} }} ] }}\n")
    yield from _server(server_dir, "nkey", ["-c", str(conf)])


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _new_key(prefix: int) -> tuple[bytes, nkeys.KeyPair]:
    seed = nkeys.encode_seed(os.urandom(32), prefix)
    return seed, nkeys.from_seed(bytearray(seed))


def _jwt(signer: nkeys.KeyPair, subject: nkeys.KeyPair, name: str, nats: dict[str, object]) -> str:
    """A NATS JWT (``ed25519-nkey``) for ``subject`` signed by ``signer``, as `nsc` would write it."""
    claims: dict[str, object] = {
        "iat": int(time.time()),
        "iss": signer.public_key.decode(),
        "name": name,
        "sub": subject.public_key.decode(),
        "nats": {**nats, "version": 2},
    }
    claims["jti"] = base64.b32encode(hashlib.sha256(json.dumps(claims).encode()).digest()).decode().rstrip("=")
    signing = f"{_b64(json.dumps({'typ': 'JWT', 'alg': 'ed25519-nkey'}).encode())}.{_b64(json.dumps(claims).encode())}"
    return f"{signing}.{_b64(signer.sign(signing.encode()))}"


@pytest.fixture(scope="module")
def creds_file(server_dir: Path) -> Path:
    """Operator, account and user keys made for this test; the server config and the user's .creds file."""
    _, operator = _new_key(nkeys.PREFIX_BYTE_OPERATOR)
    _, account = _new_key(nkeys.PREFIX_BYTE_ACCOUNT)
    _, system = _new_key(nkeys.PREFIX_BYTE_ACCOUNT)
    user_seed, user = _new_key(nkeys.PREFIX_BYTE_USER)
    unlimited = {k: -1 for k in ("subs", "data", "payload", "imports", "exports", "conn", "leaf")}
    jetstream = {k: -1 for k in ("mem_storage", "disk_storage", "streams", "consumer")}
    accounts = {
        account.public_key.decode(): _jwt(
            operator, account, "app", {"type": "account", "limits": {**unlimited, **jetstream}}
        ),
        system.public_key.decode(): _jwt(operator, system, "SYS", {"type": "account", "limits": unlimited}),
    }
    (server_dir / "operator.jwt").write_text(_jwt(operator, operator, "test-operator", {"type": "operator"}))
    preload = ", ".join(f'{key}: "{token}"' for key, token in accounts.items())
    (server_dir / "operator.conf").write_text(
        f'operator: "{server_dir / "operator.jwt"}"\nresolver: MEMORY\n'
        f"system_account: {system.public_key.decode()}\nresolver_preload: {{ {preload} }}\n"
    )
    user_jwt = _jwt(account, user, "ada", {"type": "user", "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1})
    path = server_dir / "ada.creds"
    path.write_text(
        f"-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{user_seed.decode()}\n------END USER NKEY SEED------\n"
    )
    return path


@pytest.fixture(scope="module")
def operator_server(server_dir: Path, creds_file: Path) -> Iterator[NatsServer]:
    """A server in operator (JWT) mode trusting the test operator."""
    yield from _server(server_dir, "operator", ["-c", str(server_dir / "operator.conf")])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    pem, pkcs8 = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8
    return key.private_bytes(pem, pkcs8, serialization.NoEncryption())


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(subject), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def tls_files(server_dir: Path) -> dict[str, Path]:
    """A CA, a server certificate for `localhost` and a client certificate, generated for this test."""
    files: dict[str, Path] = {}
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("shipkit-test-ca", ca_key, None, ca_key)
    files["ca"] = server_dir / "ca.pem"
    files["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for role, subject in (("server", "localhost"), ("client", "shipkit-client")):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(subject, key, ca, ca_key)
        files[f"{role}_cert"] = server_dir / f"{role}.pem"
        files[f"{role}_cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        files[f"{role}_key"] = server_dir / f"{role}.key"
        files[f"{role}_key"].write_bytes(_key_pem(key))
    return files


@pytest.fixture(scope="module")
def tls_server(server_dir: Path, tls_files: dict[str, Path]) -> Iterator[NatsServer]:
    """A server that requires TLS with a client certificate signed by the test CA."""
    args = ["--tls", "--tlscert", str(tls_files["server_cert"]), "--tlskey", str(tls_files["server_key"])]
    yield from _server(server_dir, "tls", [*args, "--tlscacert", str(tls_files["ca"]), "--tlsverify"])


def test_user_password_from_options(password_server: NatsServer) -> None:
    """--user/--password reach a server that requires them."""
    code, output = _cli("jobs", "counts", "--nats-url", password_server.url, "--user", "ada", "--password", PASSWORD)
    assert code == 0, output
    assert "total" in output


def test_password_from_environment_and_wrong_password_not_echoed(password_server: NatsServer) -> None:
    """SHIPKIT_USER/SHIPKIT_PASSWORD work; a wrong password fails without the secret in the output."""
    env = {"SHIPKIT_NATS_URL": password_server.url, "SHIPKIT_USER": "ada", "SHIPKIT_PASSWORD": PASSWORD}
    assert _cli("jobs", "counts", env=env)[0] == 0
    code, output = _cli("jobs", "counts", env={**env, "SHIPKIT_PASSWORD": "wrong-pass-123"})
    assert code != 0
    assert "wrong-pass-123" not in output
    assert "uthorization" in output


def test_percent_encoded_url_credentials(password_server: NatsServer) -> None:
    """A percent-encoded password in the URL is decoded before it reaches the server."""
    url = password_server.url.replace("nats://", "nats://ada:s3cr%3Aet%40x@")
    code, output = _cli("jobs", "counts", "--nats-url", url)
    assert code == 0, output


def test_token(token_server: NatsServer) -> None:
    """--token and SHIPKIT_TOKEN reach a token server; without it the connection is refused."""
    assert _cli("jobs", "counts", "--nats-url", token_server.url, "--token", TOKEN)[0] == 0
    assert _cli("jobs", "counts", env={"SHIPKIT_NATS_URL": token_server.url, "SHIPKIT_TOKEN": TOKEN})[0] == 0
    assert _cli("jobs", "counts", "--nats-url", token_server.url)[0] != 0


def test_nkey(nkey_server: NatsServer, nkey_seed_file: Path) -> None:
    """--nkey FILE signs the server's nonce with the seed; the seed never appears in the output."""
    code, output = _cli("jobs", "counts", "--nats-url", nkey_server.url, "--nkey", str(nkey_seed_file))
    assert code == 0, output
    assert nkey_seed_file.read_text() not in output


def test_creds_file(operator_server: NatsServer, creds_file: Path) -> None:
    """--creds (and SHIPKIT_CREDS) reach an operator-mode server; without them the connection is refused."""
    assert _cli("jobs", "counts", "--nats-url", operator_server.url, "--creds", str(creds_file))[0] == 0
    code, output = _cli(
        "jobs", "counts", env={"SHIPKIT_NATS_URL": operator_server.url, "SHIPKIT_CREDS": str(creds_file)}
    )
    assert code == 0, output
    assert "SUA" not in output  # the seed never shows
    assert _cli("jobs", "counts", "--nats-url", operator_server.url)[0] != 0


def test_mutual_tls(tls_server: NatsServer, tls_files: dict[str, Path]) -> None:
    """--tls-ca/--tls-cert/--tls-key/--tls-hostname reach a mutual-TLS server; no client cert is refused."""
    base = ["jobs", "counts", "--nats-url", tls_server.url, "--tls-ca", str(tls_files["ca"])]
    base += ["--tls-hostname", "localhost"]
    client = ["--tls-cert", str(tls_files["client_cert"]), "--tls-key", str(tls_files["client_key"])]
    code, output = _cli(*base, *client)
    assert code == 0, output
    assert _cli(*base)[0] != 0


def test_tls_cert_without_key_is_a_usage_error(tls_files: dict[str, Path]) -> None:
    """A client certificate without its key is a usage error naming the options."""
    code, output = _cli("jobs", "counts", "--tls-cert", str(tls_files["client_cert"]))
    assert code == 2
    assert "tls_cert_file and tls_key_file" in output


async def test_run_with_credentials_from_environment(password_server: NatsServer, tmp_path: Path) -> None:
    """`shipkit run` takes credentials from SHIPKIT_* variables and never logs them."""
    env = child_env(SHIPKIT_NATS_URL=password_server.url, SHIPKIT_USER="ada", SHIPKIT_PASSWORD=PASSWORD)
    process = await ShipkitProcess.start("cli_echo:service", cwd=tmp_path, env=env)
    try:
        await process.wait_for_log("service.started")
        process.send_signal(signal.SIGTERM)
        assert await process.wait_exit() == 0
    finally:
        await process.kill()
    assert PASSWORD not in "\n".join(process.lines)
