"""What one dashboard serves and how: :class:`DashboardSettings`."""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import SecretStr

from shipkit.config import NatsConfig
from shipkit.errors import ConfigurationError

DEFAULT_PORT = 8642  # not 8222: that is nats-server's monitoring port


@dataclass(frozen=True, slots=True)
class DashboardSettings:
    """Options of ``shipkit dashboard`` (and :func:`shipkit.dashboard.create_app`).

    Attributes:
        nats: where to read from.
        host / port: where the page is served (loopback by default).
        token: when set, the page and every ``/api`` call need it (``Authorization: Bearer``,
            a ``?token=`` once, which sets a cookie, or that cookie).
        allow_actions: offer cancel / retry / purge on jobs.
        refresh_s: how often services and job counts are read.
        streams_every_s: how often streams, consumers and buckets are listed.
        event_prefix: the event stream's subject prefix.
    """

    nats: NatsConfig = field(default_factory=NatsConfig)
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    token: SecretStr | None = None
    allow_actions: bool = False
    refresh_s: float = 2.0
    streams_every_s: float = 5.0
    event_prefix: str = "ship.events"

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigurationError(f"dashboard port must be 0..65535, got {self.port}")
        if self.refresh_s <= 0 or self.streams_every_s <= 0:
            raise ConfigurationError("dashboard refresh_s and streams_every_s must be > 0")
        if self.token is not None and not self.token.get_secret_value():
            raise ConfigurationError("dashboard token must not be empty (omit it to serve without one)")
