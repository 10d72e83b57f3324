"""One NATS connection per process, shared by every primitive: :class:`ConnectionManager`.

Unlike noesis-ship, where each primitive dials its own connection, shipkit primitives take a
manager; a primitive built without one makes (and later closes) its own.
The manager also provisions streams and buckets: existing ones are used as they are, and a
config that differs from the declaration is reported as a drift warning, never rewritten.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable, Coroutine
from typing import Any, Literal, Self, TypeVar

from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from shipkit._connectable import Connectable
from shipkit._dial import ConnectErrors, dial
from shipkit.config import KvBucketConfig, NatsConfig, ObjectStoreConfig, StreamConfig
from shipkit.errors import (
    BucketNotFoundError,
    NotConnectedError,
    ProvisioningError,
    StreamExistsError,
    StreamNotFoundError,
    translate_nats_errors,
)
from shipkit.logging import get_logger

__all__ = ["ConnectionManager", "ConnectionOwner", "ProvisionMode", "resolve_connection"]

ProvisionMode = Literal["create", "verify"]

ResourceT = TypeVar("ResourceT", StreamConfig, KvBucketConfig, ObjectStoreConfig)

log = get_logger(__name__)


def _tls_context(config: NatsConfig) -> ssl.SSLContext | None:
    if not config.uses_tls:
        return None
    context = ssl.create_default_context(
        purpose=ssl.Purpose.SERVER_AUTH,
        cafile=str(config.tls_ca_file) if config.tls_ca_file else None,
    )
    if config.tls_cert_file and config.tls_key_file:
        context.load_cert_chain(str(config.tls_cert_file), str(config.tls_key_file))
    return context


class ConnectionManager(Connectable):
    """Owns the NATS connection and its JetStream context; provisions streams and buckets.

    Use it as an async context manager, or call :meth:`connect` / :meth:`close`::

        async with ConnectionManager(NatsConfig.from_url("nats://localhost:4222")) as conn:
            await conn.ensure_stream(StreamConfig.event_bus())

    Args:
        config: how to connect; defaults to :class:`NatsConfig` (environment URL).
        provision: ``"create"`` creates missing streams/buckets; ``"verify"`` raises
            :class:`ProvisioningError` instead (for infrastructure-managed deployments).
    """

    def __init__(self, config: NatsConfig | None = None, *, provision: ProvisionMode = "create") -> None:
        self.config = config or NatsConfig()
        self.provision: ProvisionMode = provision
        self.replicas: int | None = self.config.replicas
        """Replicas of every stream, bucket and object store provisioned here that is declared at R1."""
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._streams: dict[str, Any] = {}
        self._kv: dict[str, KeyValue] = {}
        self._objects: dict[str, ObjectStore] = {}
        self._closing = False
        self._connect_errors: ConnectErrors | None = None
        self._reconnect_listeners: list[Callable[[], Coroutine[Any, Any, None]]] = []
        self._listener_tasks: set[asyncio.Task[None]] = set()
        self._next_reconnect: asyncio.Future[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        """True while the underlying connection is open (it may be reconnecting)."""
        return self._nc is not None and not self._nc.is_closed

    async def connect(self) -> ConnectionManager:
        """Connect if not connected yet; a second call is a no-op.

        Raises:
            NatsConnectionError: no server in ``config.servers`` accepted the connection within
                ``config.connect_timeout_s`` (every attempt included); the message names the
                servers tried and the cause (untrusted certificate, rejected credentials, refused,
                timed out).
        """
        if self.is_connected:
            return self
        config = self.config
        options: dict[str, Any] = {
            "servers": list(config.servers),
            "name": config.name,
            "connect_timeout": config.connect_timeout_s,
            # nats-py retries the initial connect under the reconnect policy (forever with -1);
            # we want a down server to fail fast: two quick tries per server, and the
            # configured policy is installed once connected (see below).
            "allow_reconnect": True,
            "max_reconnect_attempts": 1,
            "reconnect_time_wait": 0.05,
            "ping_interval": config.ping_interval_s,
            "max_outstanding_pings": config.max_outstanding_pings,
            "drain_timeout": config.drain_timeout_s,
            "error_cb": self._on_error,
            "disconnected_cb": self._on_disconnected,
            "reconnected_cb": self._on_reconnected,
        }
        if config.user is not None:
            options["user"] = config.user
        if config.password is not None:
            options["password"] = config.password.get_secret_value()
        if config.token is not None:
            options["token"] = config.token.get_secret_value()
        if config.nkeys_seed is not None:
            options["nkeys_seed"] = str(config.nkeys_seed)
        if config.creds_file is not None:
            options["user_credentials"] = str(config.creds_file)
        tls = _tls_context(config)
        if tls is not None:
            options["tls"] = tls
            if config.tls_hostname:
                options["tls_hostname"] = config.tls_hostname
        self._connect_errors = ConnectErrors()
        try:
            nc = await dial(config, options, self._connect_errors)
        finally:
            self._connect_errors = None
        nc.options["allow_reconnect"] = config.allow_reconnect
        nc.options["max_reconnect_attempts"] = config.max_reconnect_attempts
        nc.options["reconnect_time_wait"] = config.reconnect_time_wait_s
        self._closing = False
        self._nc = nc
        self._js = nc.jetstream(timeout=config.request_timeout_s)
        log.debug("nats.connected", server=_server_address(nc))
        return self

    async def close(self) -> None:
        """Drain and close the connection (pending publishes are flushed). Idempotent."""
        nc, self._nc, self._js = self._nc, None, None
        self._streams.clear()
        self._kv.clear()
        self._objects.clear()
        if nc is None or nc.is_closed:
            return
        self._closing = True
        try:
            await nc.drain()
        except Exception as exc:  # a failed drain must still close the socket
            log.warning("nats.drain_failed", error=f"{type(exc).__name__}: {exc}")
            await nc.close()
        finally:
            self._closing = False

    # -- accessors -------------------------------------------------------------------------

    @property
    def client(self) -> Client:
        """The nats-py client. Raises :class:`NotConnectedError` before :meth:`connect`."""
        if self._nc is None or self._nc.is_closed:
            raise NotConnectedError("not connected to NATS: call `await connect()` first")
        return self._nc

    @property
    def jetstream(self) -> JetStreamContext:
        """The JetStream context. Raises :class:`NotConnectedError` before :meth:`connect`."""
        if self._js is None or self._nc is None or self._nc.is_closed:
            raise NotConnectedError("not connected to NATS: call `await connect()` first")
        return self._js

    @property
    def max_payload(self) -> int:
        """The server's maximum message size in bytes."""
        return int(self.client.max_payload)

    async def confirm_sent(self) -> None:
        """Return once the server has processed every command this connection queued so far.

        Use it after subscribing, before telling anyone the subscriptions exist. nats-py's own
        ``flush()`` is not enough: it writes its PING straight to the socket, ahead of SUBs still
        queued for the flusher task, so its PONG can return before the server saw them. A message
        to ourselves travels the same queue as the SUBs, so its arrival proves they were processed.
        """
        client = self.client
        arrived = asyncio.Event()

        async def on_msg(_msg: Any) -> None:
            arrived.set()

        inbox = client.new_inbox()
        with translate_nats_errors("confirm subscriptions"):
            sub = await client.subscribe(inbox, cb=on_msg)
            try:
                await client.publish(inbox, b"")
                await asyncio.wait_for(arrived.wait(), self.config.request_timeout_s)
            finally:
                await sub.unsubscribe()

    async def request(
        self, subject: str, payload: bytes, *, timeout_s: float | None = None, headers: dict[str, str] | None = None
    ) -> Any:
        """A core request using ``config.request_timeout_s`` unless ``timeout_s`` is given."""
        timeout = timeout_s if timeout_s is not None else self.config.request_timeout_s
        with translate_nats_errors(f"request {subject}"):
            return await self.client.request(subject, payload, timeout=timeout, headers=headers)

    # -- provisioning ----------------------------------------------------------------------

    async def ensure_stream(self, config: StreamConfig) -> Any:
        """Create the stream if missing (or verify it exists); return its ``StreamInfo``.

        An existing stream is used as it is; fields differing from ``config`` are logged as
        ``stream.drift`` with declared and actual values.
        """
        if config.name in self._streams:
            return self._streams[config.name]
        config = self.replicated(config)
        js = self.jetstream
        info = await self._stream_info(config.name)
        if info is None:
            if self.provision == "verify":
                raise ProvisioningError(
                    f"stream {config.name!r} (subjects {config.subjects}) does not exist and provision mode is "
                    "'verify': create it with your infrastructure tooling or run without --verify"
                )
            try:
                with translate_nats_errors(f"create stream {config.name}"):
                    info = await js.add_stream(config.to_nats())
                log.info("stream.provisioned", stream=config.name, subjects=config.subjects)
            except StreamExistsError:
                info = await self._stream_info(config.name)  # lost a creation race: use theirs
        if info is not None:
            self._report_drift("stream.drift", config.name, config.drift(info.config))
        self._streams[config.name] = info
        return info

    def replicated(self, config: ResourceT) -> ResourceT:
        """``config`` with :attr:`replicas` applied when it is declared at the default R1."""
        if self.replicas is None or self.replicas == config.replicas or config.replicas != 1:
            return config
        return config.model_copy(update={"replicas": self.replicas})

    async def _stream_info(self, name: str) -> Any | None:
        try:
            with translate_nats_errors(f"stream info {name}"):
                return await self.jetstream.stream_info(name)
        except StreamNotFoundError:
            return None

    async def ensure_kv_bucket(self, config: KvBucketConfig) -> KeyValue:
        """Create the KV bucket if missing (or verify it exists); return the nats-py handle."""
        cached = self._kv.get(config.bucket)
        if cached is not None:
            return cached
        config = self.replicated(config)
        js = self.jetstream
        try:
            with translate_nats_errors(f"kv bucket {config.bucket}"):
                kv = await js.key_value(config.bucket)
            backing = await self._backing_config(f"KV_{config.bucket}")
            self._report_drift("kv.drift", config.bucket, config.drift(backing))
        except BucketNotFoundError:
            if self.provision == "verify":
                raise ProvisioningError(
                    f"KV bucket {config.bucket!r} does not exist and provision mode is 'verify'"
                ) from None
            with translate_nats_errors(f"create kv bucket {config.bucket}"):
                kv = await js.create_key_value(config.to_nats())
            log.info("kv.provisioned", bucket=config.bucket, history=config.history, ttl_s=config.ttl_s)
        self._kv[config.bucket] = kv
        return kv

    async def ensure_object_store(self, config: ObjectStoreConfig) -> ObjectStore:
        """Create the object bucket if missing (or verify it exists); return the nats-py handle."""
        cached = self._objects.get(config.bucket)
        if cached is not None:
            return cached
        config = self.replicated(config)
        js = self.jetstream
        try:
            with translate_nats_errors(f"object bucket {config.bucket}"):
                store = await js.object_store(config.bucket)
            self._report_drift(
                "objects.drift", config.bucket, config.drift(await self._backing_config(f"OBJ_{config.bucket}"))
            )
        except (BucketNotFoundError, StreamNotFoundError):
            if self.provision == "verify":
                raise ProvisioningError(
                    f"object bucket {config.bucket!r} does not exist and provision mode is 'verify'"
                ) from None
            with translate_nats_errors(f"create object bucket {config.bucket}"):
                store = await js.create_object_store(config.bucket, config=config.to_nats())
            log.info("objects.provisioned", bucket=config.bucket)
        self._objects[config.bucket] = store
        return store

    async def _backing_config(self, stream: str) -> Any:
        info = await self._stream_info(stream)
        return info.config if info is not None else None

    def _report_drift(self, event: str, name: str, diff: dict[str, tuple[Any, Any]]) -> None:
        replicas = diff.get("num_replicas") or diff.get("replicas")
        if replicas is not None and self.provision == "verify":
            raise ProvisioningError(
                f"{name!r} exists with {replicas[1]} replica(s) but {replicas[0]} are declared and provision mode "
                "is 'verify': change it with your infrastructure tooling (nats stream edit --replicas) or the setting"
            )
        if diff:
            log.warning(
                event,
                name=name,
                fields=sorted(diff),
                declared={k: v[0] for k, v in diff.items()},
                actual={k: v[1] for k, v in diff.items()},
                hint="the existing config is used as it is; update it with your tooling if the declaration is right",
            )

    # -- connection events -------------------------------------------------------------------

    async def _on_error(self, exc: Exception) -> None:
        if self._connect_errors is not None:  # the first connect raises NatsConnectionError naming these
            self._connect_errors.add(exc)
            return
        log.warning("nats.error", error=f"{type(exc).__name__}: {exc}")

    async def _on_disconnected(self) -> None:
        if not self._closing and self._connect_errors is None:  # an abandoned first attempt is no news
            log.warning("nats.disconnected", hint="reconnecting per the config's reconnect policy")

    def on_reconnect(self, listener: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
        """Call ``listener`` each time the connection is back (subscriptions already re-sent).

        Pull consumers, watches and job workers use it to re-arm at once instead of waiting
        for missed heartbeats. A listener runs in its own task, so a slow one delays no other;
        its failure is logged. Returns a function that removes the listener.
        """
        self._reconnect_listeners.append(listener)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._reconnect_listeners.remove(listener)

        return remove

    def next_reconnect(self) -> asyncio.Future[None]:
        """A future resolved when the connection is next re-established (one shared by all callers).

        A request sent just before the connection broke gets no reply: racing it against this
        lets a caller send again at once instead of waiting out its timeout.
        """
        if self._next_reconnect is None or self._next_reconnect.done():
            self._next_reconnect = asyncio.get_running_loop().create_future()
        return self._next_reconnect

    async def _on_reconnected(self) -> None:
        log.info("nats.reconnected", server=_server_address(self._nc))
        if self._next_reconnect is not None and not self._next_reconnect.done():
            self._next_reconnect.set_result(None)
        for listener in list(self._reconnect_listeners):
            task = asyncio.create_task(listener())
            self._listener_tasks.add(task)
            task.add_done_callback(self._listener_done)

    def _listener_done(self, task: asyncio.Task[None]) -> None:
        self._listener_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("nats.reconnect_listener_failed", exc_info=task.exception())


def _server_address(nc: Client | None) -> str | None:
    """``host:port`` of the connected server, without the URL's credentials (``netloc`` has them)."""
    url = nc.connected_url if nc is not None else None
    return f"{url.hostname}:{url.port}" if url is not None else None


def resolve_connection(connection: ConnectionManager | NatsConfig | str | None) -> tuple[ConnectionManager, bool]:
    """The manager a primitive should use, and whether the primitive owns (and must close) it.

    Accepts a shared :class:`ConnectionManager` (not owned), a :class:`NatsConfig` or URL
    string (a new owned manager), or ``None`` (an owned manager for the environment default).
    """
    if isinstance(connection, ConnectionManager):
        return connection, False
    if isinstance(connection, str):
        return ConnectionManager(NatsConfig.from_url(connection)), True
    return ConnectionManager(connection), True


class ConnectionOwner(Connectable):
    """Base of everything that works over one :class:`ConnectionManager`: primitives, clients, queues.

    It resolves the ``connection`` argument once (a shared manager, never closed here; or a
    config/URL/None, owned and closed by :meth:`close`) and keeps it as :attr:`connection`.
    Subclasses add their own setup in :meth:`_setup` and release it in :meth:`_teardown`.

    Args:
        connection: a shared :class:`ConnectionManager`, a :class:`NatsConfig` or URL (owned),
            or ``None`` for the environment default (owned).
    """

    def __init__(self, connection: ConnectionManager | NatsConfig | str | None = None) -> None:
        self.connection, self._owns_connection = resolve_connection(connection)

    async def connect(self) -> Self:
        """Connect (if needed), then run the subclass's setup; returns ``self``.

        Raises:
            NatsConnectionError: the server cannot be reached.
            ProvisioningError: something the object needs is missing in verify mode.
        """
        await self.connection.connect()
        await self._setup()
        return self

    async def close(self) -> None:
        """Run the subclass's teardown, then close the connection if this object owns it (idempotent)."""
        try:
            await self._teardown()
        finally:
            if self._owns_connection:
                await self.connection.close()

    async def _setup(self) -> None:
        """Acquire what the object needs once connected (provision, subscribe ...)."""

    async def _teardown(self) -> None:
        """Release what :meth:`_setup` acquired; must be safe to call more than once."""
