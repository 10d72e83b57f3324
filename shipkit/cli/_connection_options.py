"""``@connection_options``: how every ``shipkit`` command reaches NATS, as one click decorator.

It adds ``--nats-url``, ``--creds``, ``--nkey``, ``--token``, ``--user``, ``--password``,
``--tls-ca``, ``--tls-cert``, ``--tls-key`` and ``--tls-hostname`` (each also read from a
``SHIPKIT_*`` environment variable) and hands the command a single ``nats_config:
NatsConfig`` instead. ``servers`` is in ``nats_config.model_fields_set`` only when a URL was
given (option or variable), so ``shipkit run`` can still start its embedded server otherwise.
Secrets are ``SecretStr`` from here on; a bad combination is a usage error naming the options.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from pydantic import ValidationError

from shipkit.config import NatsConfig

__all__ = ["CONNECTION_ENV_VARS", "build_config", "connection_options", "connection_options_with_nats_token"]

F = TypeVar("F", bound=Callable[..., Any])

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)

# (option, parameter, NatsConfig field, environment variable, click type, help)
_OPTIONS: tuple[tuple[str, str, str, str, Any, str], ...] = (
    (
        "--nats-url",
        "nats_url",
        "servers",
        "SHIPKIT_NATS_URL",
        str,
        "NATS server URL(s), comma-separated; percent-encode credentials in it.  "
        "[default: $NATS_URL or nats://localhost:4222]",
    ),
    ("--creds", "creds", "creds_file", "SHIPKIT_CREDS", _FILE, "A .creds file (user JWT and nkey seed)."),
    ("--nkey", "nkey", "nkeys_seed", "SHIPKIT_NKEY", _FILE, "A file holding an nkey seed (SU...)."),
    ("--token", "token", "token", "SHIPKIT_TOKEN", str, "An authentication token."),
    ("--user", "user", "user", "SHIPKIT_USER", str, "A user name (with --password)."),
    ("--password", "password", "password", "SHIPKIT_PASSWORD", str, "The password for --user."),
    ("--tls-ca", "tls_ca", "tls_ca_file", "SHIPKIT_TLS_CA", _FILE, "CA certificate(s) to trust (PEM)."),
    ("--tls-cert", "tls_cert", "tls_cert_file", "SHIPKIT_TLS_CERT", _FILE, "Client certificate for mutual TLS."),
    ("--tls-key", "tls_key", "tls_key_file", "SHIPKIT_TLS_KEY", _FILE, "Private key of --tls-cert."),
    ("--tls-hostname", "tls_hostname", "tls_hostname", "SHIPKIT_TLS_HOSTNAME", str, "Server name to verify."),
)

CONNECTION_ENV_VARS: tuple[str, ...] = tuple(option[3] for option in _OPTIONS)
"""Every environment variable :func:`connection_options` reads."""


def build_config(values: dict[str, Any]) -> NatsConfig:
    """The :class:`NatsConfig` for parsed option values (``None`` means not given).

    Raises:
        click.UsageError: the combination is invalid (e.g. ``--tls-cert`` without ``--tls-key``);
            the message names the problem, never a secret (the config hides its input in errors).
    """
    return _config_from_fields({field: values.get(param) for _, param, field, *_ in _OPTIONS})


def _config_from_fields(values: dict[str, Any]) -> NatsConfig:
    fields = {field: value for field, value in values.items() if value is not None}
    try:
        return NatsConfig(**fields)
    except ValidationError as exc:
        problems = "; ".join(_describe(error) for error in exc.errors())
        raise click.UsageError(f"connection options: {problems}") from None


def _describe(error: Any) -> str:
    flags = {field: option for option, _, field, *_ in _OPTIONS}
    where = ".".join(str(part) for part in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{flags.get(where, where)}: {message}" if where else message


def _connection_options(
    options: tuple[tuple[str, str, str, str, Any, str], ...],
) -> Callable[[F], F]:
    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            values = {field: kwargs.pop(param) for _, param, field, *_ in options}
            return func(*args, nats_config=_config_from_fields(values), **kwargs)

        command: Any = wrapper
        for option, param, _, envvar, kind, help_text in reversed(options):
            command = click.option(
                option,
                param,
                type=kind,
                default=None,
                envvar=envvar,
                show_envvar=True,
                metavar="FILE" if kind is _FILE else ("URL" if param == "nats_url" else "TEXT"),
                help=help_text,
            )(command)
        return command  # type: ignore[no-any-return]

    return decorate


def connection_options(func: F) -> F:
    """Add the connection options to a click command; it receives ``nats_config: NatsConfig``."""
    return _connection_options(_OPTIONS)(func)


def connection_options_with_nats_token(func: F) -> F:
    """:func:`connection_options` with ``--nats-token`` for a command whose ``--token`` means its own."""
    renamed = tuple(
        ("--nats-token", "nats_token", *rest) if option == "--token" else (option, param, *rest)
        for option, param, *rest in _OPTIONS
    )
    return _connection_options(renamed)(func)
