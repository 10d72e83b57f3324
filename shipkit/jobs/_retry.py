"""What the job system retries: :data:`TRANSIENT_ERRORS`.

The retrying itself is :mod:`shipkit._failover`'s (shared with the event bus and KV writes); the
job system adds "stream not found" to what it retries.
"""

from __future__ import annotations

from shipkit import _failover
from shipkit.errors import ShipkitError, StreamNotFoundError

# "No stream answered" is among them because a server shutting down stops JetStream before it
# drops its connections (direct gets still say "not found" then).
TRANSIENT_ERRORS: tuple[type[ShipkitError], ...] = (*_failover.TRANSIENT_ERRORS, StreamNotFoundError)
