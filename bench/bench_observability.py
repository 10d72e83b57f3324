"""What metrics and tracing cost on the request hot path, in process (no socket, no server).

Run from the repository root (not part of the test suite)::

    .venv/bin/python bench/bench_observability.py            # 7 repeats x 50 000 requests per variant
    .venv/bin/python bench/bench_observability.py --quick    # 2 x 5 000, to check it runs

Each variant wires the same ``@service.handler`` (a pydantic model in, a model out) through the
runtime's real request path (router -> endpoint -> reply) onto a stub client that publishes
nowhere, then feeds it pre-built messages and reads ``time.process_time()``. Variants alternate
within every repeat; the table shows the best repeat of each:

- ``off``: no metrics port, no tracer provider (what every service runs unless asked);
- ``metrics``: ``metrics_port`` set (the latency histogram observes each request);
- ``tracing``: an SDK tracer provider with no exporter (span creation and context only);
- ``metrics + tracing``.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from pydantic import BaseModel

from shipkit import Service, _tracing
from shipkit.service.runtime import Runtime


class Order(BaseModel):
    """The request."""

    id: int
    customer: str
    amount_cents: int


class Quote(BaseModel):
    """The reply."""

    id: int
    total_cents: int


BODY = Order(id=1, customer="c" * 16, amount_cents=1250).model_dump_json().encode()


class _StubClient:
    """Stands in for a nats-py client: records subscription callbacks, publishes nowhere."""

    def __init__(self) -> None:
        self.callbacks: dict[str, Any] = {}

    async def subscribe(self, subject: str, queue: str = "", cb: Any = None) -> Any:
        self.callbacks[subject] = cb
        return self

    async def publish(self, subject: str, payload: bytes = b"", reply: str = "", headers: Any = None) -> None:
        return None


async def _callback(*, metrics: bool, tracing: bool) -> tuple[Any, _StubClient]:
    """The ``{prefix}.>`` callback of a runtime built with the given instruments (private wiring)."""
    _tracing.use_tracer_provider(TracerProvider() if tracing else None)
    service = Service("bench", prefix="bench.sk")

    @service.handler("quote")
    async def quote(order: Order) -> Quote:
        return Quote(id=order.id, total_cents=order.amount_cents + 100)

    stub = _StubClient()
    runtime = Runtime(service, "nats://127.0.0.1:4222", metrics_port=0 if metrics else None)
    runtime._client = stub  # type: ignore[assignment]  # the stub stands in for the connection
    await runtime._start_requests()
    _tracing.use_tracer_provider(None)
    return stub.callbacks["bench.sk.>"], stub


async def _measure(repeats: int, count: int) -> dict[str, float]:
    from nats.aio.msg import Msg

    variants = {
        "off": await _callback(metrics=False, tracing=False),
        "metrics": await _callback(metrics=True, tracing=False),
        "tracing": await _callback(metrics=False, tracing=True),
        "metrics + tracing": await _callback(metrics=True, tracing=True),
    }
    best: dict[str, float] = {}
    for _ in range(repeats):
        for name, (callback, stub) in variants.items():
            msgs = [Msg(_client=stub, subject="bench.sk.quote", reply="_INBOX.x.y", data=BODY) for _ in range(count)]
            started = time.process_time()
            for msg in msgs:
                await callback(msg)
            best[name] = min(best.get(name, math.inf), (time.process_time() - started) / count * 1e6)
    return best


def main() -> int:
    """Print CPU µs per request for each variant and its difference to ``off``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="2 x 5 000 requests: check that it runs")
    args = parser.parse_args()
    repeats, count = (2, 5_000) if args.quick else (7, 50_000)
    best = asyncio.run(_measure(repeats, count))
    print(f"request -> reply, in process: CPU µs per request, best of {repeats} x {count}")
    for name, cost in best.items():
        print(f"  {name:<18} {cost:6.2f} µs   {cost - best['off']:+.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
