"""shipkit runtime vs raw nats-py vs FastStream, side by side on one embedded nats-server.

Run from the repository root (not part of the test suite)::

    .venv/bin/python bench/bench_runtime.py            # full: 7 repeats, ~6-9 minutes on 2 cores
    .venv/bin/python bench/bench_runtime.py --quick    # 2 repeats, shorter windows, ~1-2 minutes

Rows (each variant does the same pydantic / JSON work):

- request-reply, one at a time and 64 in flight: a shipkit ``@service.handler`` taking and
  returning a pydantic model; a raw nats-py responder (``Order.model_validate_json(msg.data)`` ...
  ``msg.respond(quote.model_dump_json().encode())``); a FastStream NATS subscriber.
- core pub/sub receive: ``@service.on_message`` (payload ``dict``) vs a raw subscriber doing
  ``json.loads(msg.data)``. The subscriber holds its event loop while a publisher process floods
  the subject, then drains the backlog: its receive rate is measured with the CPU to itself.
- JetStream consume: ``@service.on_event`` vs a raw pull consumer (fetch 100, ``ack()`` each,
  ``ShipEvent.model_validate_json``) over the same pre-published ``ShipEvent`` s, each run on a
  fresh durable consumer.

Method (see bench/README.md): the responder/consumer and the requester/publisher
run in separate spawned processes, each of which allocates and frees 1 MiB first; variants
alternate within every repeat (the order rotates between repeats); a measurement disturbed by other
processes is repeated, and the table shows medians over the undisturbed repeats. Responder CPU per
message is ``time.process_time()`` in the responder process over the measured window divided by the
messages it handled there. ``--dispatch`` measures only the callback layers, in process.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from shipkit.models import ShipEvent  # module level: handler annotations resolve against globals

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # the bench directory is not a package: imported from sys.path
    Child,
    ForeignLoad,
    confirm_subscriptions,
    embedded_server,
    fmt_rate,
    fmt_ratio,
    fmt_us,
    machine_note,
    median,
    percentile,
    print_table,
    quiet_logging,
    warm_allocator,
)

CTL_SUBJECT = "bench.ctl.mark"
PUBSUB_SUBJECT = "bench.ticks"
EVENT_PREFIX = "ship.events"
EVENT_TYPE = "bench.tick"
EVENT_STREAM = "SHIP_EVENTS"
RR_SUBJECTS = {"shipkit": "bench.sk.quote", "raw": "bench.raw.quote", "faststream": "bench.fs.quote"}


# -- the work every variant does ----------------------------------------------------------------


class Order(BaseModel):
    """The request model."""

    id: int
    customer: str
    item: str
    quantity: int
    unit_price: float
    tags: list[str] = []


class Quote(BaseModel):
    """The reply model."""

    id: int
    item: str
    total: float
    currency: str = "EUR"


def price(order: Order) -> Quote:
    """The handler's (tiny) business logic, identical in every variant."""
    return Quote(id=order.id, item=order.item, total=round(order.quantity * order.unit_price, 2))


ORDER_BODY = (
    Order(id=42, customer="acme", item="widget", quantity=3, unit_price=9.99, tags=["rush", "gift"])
    .model_dump_json()
    .encode()
)
TICK_BODY = json.dumps(
    {
        "event_type": "sensor.tick",
        "source": "bench",
        "payload": {"seq": 1, "value": 3.14159, "unit": "C", "tags": ["a", "b"]},
        "timestamp": "2026-11-27T12:00:00+00:00",
        "correlation_id": None,
    },
    separators=(",", ":"),
).encode()


class Counter:
    """Messages handled in this process, and the window marks of the stream-style rows."""

    __slots__ = ("cpu0", "cpu1", "done", "n", "t0", "t1", "target", "warmup")

    def __init__(self, warmup: int = 0, target: int = 0) -> None:
        self.n = 0
        self.warmup = warmup
        self.target = target
        self.t0 = self.t1 = self.cpu0 = self.cpu1 = math.nan
        self.done: asyncio.Event | None = None

    def tick(self) -> None:
        """Count one message; mark the window start after ``warmup`` and its end at ``target``."""
        self.n += 1
        if self.n == self.warmup:
            self.t0, self.cpu0 = time.perf_counter(), time.process_time()
        elif self.n == self.target:
            self.t1, self.cpu1 = time.perf_counter(), time.process_time()
            if self.done is not None:
                self.done.set()


# -- child process plumbing -------------------------------------------------------------------


def _child(conn: Any, body: Callable[[], Awaitable[Any]]) -> None:
    """Common child start: allocator warm-up, quiet logs, run ``body``, send errors to the parent."""
    warm_allocator()
    quiet_logging()
    try:
        asyncio.run(body())
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        raise


def _expect(message: Any, what: str) -> Any:
    if isinstance(message, tuple) and message and message[0] == "error":
        raise RuntimeError(f"{what} failed:\n{message[1]}")
    return message


async def _wait_for_parent(conn: Any) -> Any:
    """Block (in a thread, costing no CPU) until the parent sends something."""
    return await asyncio.get_running_loop().run_in_executor(None, conn.recv)


# -- request-reply -------------------------------------------------------------------------------


async def _start_responder(variant: str, url: str, counter: Counter) -> Callable[[], Awaitable[Any]]:
    """Start one responder variant; return its stop function."""
    subject = RR_SUBJECTS[variant]
    if variant == "shipkit":
        from shipkit import Service
        from shipkit.service.runtime import Runtime

        service = Service("bench", prefix=subject.rsplit(".", 1)[0])

        @service.handler("quote")
        async def quote(order: Order) -> Quote:
            counter.n += 1
            return price(order)

        runtime = Runtime(service, url, graceful_timeout_s=1.0)
        await runtime.start()
        return runtime.shutdown
    if variant == "raw":
        import nats

        nc = await nats.connect(url)

        async def respond(msg: Any) -> None:
            counter.n += 1
            order = Order.model_validate_json(msg.data)
            await msg.respond(price(order).model_dump_json().encode())

        await nc.subscribe(subject, queue="q", cb=respond)
        await confirm_subscriptions(nc)
        return nc.close
    if variant == "faststream":
        from faststream.nats import NatsBroker

        broker = NatsBroker(url, logger=None)

        @broker.subscriber(subject, queue="q")
        async def fs_quote(order: Order) -> Quote:
            counter.n += 1
            return price(order)

        await broker.start()
        return broker.stop
    raise ValueError(f"unknown variant {variant!r}")


def responder_main(conn: Any, variant: str, url: str) -> None:
    """Child: run a responder until the parent says stop; answer CPU marks on ``CTL_SUBJECT``."""

    async def body() -> None:
        import nats

        counter = Counter()
        stop = await _start_responder(variant, url, counter)
        ctl = await nats.connect(url)

        async def mark(msg: Any) -> None:
            await msg.respond(json.dumps({"cpu": time.process_time(), "n": counter.n}).encode())

        await ctl.subscribe(CTL_SUBJECT, cb=mark)
        await confirm_subscriptions(ctl)
        conn.send("ready")
        await _wait_for_parent(conn)
        await ctl.close()
        await stop()
        conn.send("stopped")

    _child(conn, body)


def requester_main(conn: Any, variant: str, url: str, concurrency: int, warmup_s: float, duration_s: float) -> None:
    """Child: warm up, mark, keep ``concurrency`` requests in flight for ``duration_s``, mark; report."""

    async def body() -> None:
        import nats

        subject = RR_SUBJECTS[variant]
        nc = await nats.connect(url)
        first = await _first_reply(nc, subject)
        quote = Quote.model_validate_json(first.data)  # the variant really does the work
        if quote.total != 29.97 or (first.headers and "Nats-Service-Error" in first.headers):
            raise RuntimeError(f"{variant}: unexpected reply {first.data!r} {first.headers}")

        async def worker(until: float, latencies: list[int]) -> None:
            request, clock = nc.request, time.perf_counter_ns
            while time.perf_counter() < until:
                started = clock()
                await request(subject, ORDER_BODY, timeout=5)
                latencies.append(clock() - started)

        async def load(seconds: float) -> tuple[list[int], float]:
            latencies: list[int] = []
            started = time.perf_counter()
            await asyncio.gather(*(worker(started + seconds, latencies) for _ in range(concurrency)))
            return latencies, time.perf_counter() - started

        await load(warmup_s)
        mark0 = json.loads((await nc.request(CTL_SUBJECT, b"", timeout=5)).data)
        latencies, elapsed = await load(duration_s)
        mark1 = json.loads((await nc.request(CTL_SUBJECT, b"", timeout=5)).data)
        await nc.close()
        latencies.sort()
        handled = mark1["n"] - mark0["n"]
        conn.send(
            {
                "rate": len(latencies) / elapsed,
                "p50_us": percentile(latencies, 50) / 1000,
                "p99_us": percentile(latencies, 99) / 1000,
                "cpu_us": (mark1["cpu"] - mark0["cpu"]) / handled * 1e6 if handled else math.nan,
                "count": len(latencies),
            }
        )

    _child(conn, body)


async def _first_reply(nc: Any, subject: str, limit_s: float = 10.0) -> Any:
    """The first reply, retrying while the responder's subscription is not yet known to the server."""
    import nats.errors

    deadline = time.monotonic() + limit_s
    while True:
        try:
            return await nc.request(subject, ORDER_BODY, timeout=5)
        except nats.errors.NoRespondersError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.01)


def run_request_reply(url: str, variant: str, concurrency: int, cfg: Config) -> dict[str, float]:
    """One measurement: fresh responder and requester processes."""
    responder = Child(responder_main, variant, url, name=f"responder-{variant}")
    try:
        _expect(responder.recv(60), f"responder {variant}")
        requester = Child(
            requester_main, variant, url, concurrency, cfg.warmup_s, cfg.duration_s, name=f"requester-{variant}"
        )
        try:
            result: dict[str, float] = _expect(
                requester.recv(cfg.warmup_s + cfg.duration_s + 60), f"requester {variant}"
            )
        finally:
            requester.join()
        responder.send("stop")
        _expect(responder.recv(30), f"responder {variant} stop")
    finally:
        responder.join()
    return result


# -- core pub/sub receive ----------------------------------------------------------------------


def subscriber_main(conn: Any, variant: str, url: str, warmup: int, count: int) -> None:
    """Child: subscribe, say ready, count messages; report the rate and CPU between the marks."""

    async def body() -> None:
        counter = Counter(warmup=warmup, target=warmup + count)
        counter.done = asyncio.Event()
        if variant == "shipkit":
            from shipkit import Service
            from shipkit.service.runtime import Runtime

            service = Service("benchsub")

            @service.on_message(PUBSUB_SUBJECT)
            async def on_tick(data: dict[str, Any]) -> None:
                counter.tick()

            runtime = Runtime(service, url, graceful_timeout_s=1.0)
            await runtime.start()  # returns once the server has the subscriptions
            stop: Callable[[], Awaitable[Any]] = runtime.shutdown
        else:
            import nats

            nc = await nats.connect(url)

            async def cb(msg: Any) -> None:
                json.loads(msg.data)
                counter.tick()

            await nc.subscribe(PUBSUB_SUBJECT, cb=cb)
            await confirm_subscriptions(nc)
            stop = nc.close
        conn.send("ready")
        # Block the event loop (not a thread): nothing is read while the publisher floods, so the
        # backlog waits in the server and the kernel, and is then drained with the CPU to ourselves.
        conn.recv()
        await _wait_until_done(counter)
        await stop()
        conn.send(_window_result(counter, count))

    _child(conn, body)


async def _wait_until_done(counter: Counter, stall_s: float = 5.0, limit_s: float = 120.0) -> None:
    """Until the target count, or ``stall_s`` without a new message (lost messages), or ``limit_s``."""
    assert counter.done is not None
    deadline = time.monotonic() + limit_s
    last = -1
    while not counter.done.is_set() and time.monotonic() < deadline:
        if counter.n == last and counter.n > 0:
            return
        last = counter.n
        try:
            await asyncio.wait_for(counter.done.wait(), stall_s)
        except TimeoutError:
            continue


def _window_result(counter: Counter, count: int) -> dict[str, float]:
    if math.isnan(counter.t1):
        return {"rate": math.nan, "cpu_us": math.nan, "lost": counter.target - counter.n}
    elapsed = counter.t1 - counter.t0
    return {"rate": count / elapsed, "cpu_us": (counter.cpu1 - counter.cpu0) / count * 1e6, "lost": 0}


def publisher_main(conn: Any, url: str, total: int) -> None:
    """Child: publish ``total`` messages as fast as nats-py goes, flush, report."""

    async def body() -> None:
        import nats

        nc = await nats.connect(url, flusher_queue_size=4096, pending_size=8 * 1024 * 1024)
        publish = nc.publish
        started = time.perf_counter()
        for _ in range(total):
            await publish(PUBSUB_SUBJECT, TICK_BODY)
        await nc.flush(timeout=60)
        elapsed = time.perf_counter() - started
        await nc.close()
        conn.send({"rate": total / elapsed})

    _child(conn, body)


def run_pubsub(url: str, variant: str, cfg: Config) -> dict[str, float]:
    """One measurement: a fresh subscriber, then a fresh publisher flooding it."""
    subscriber = Child(subscriber_main, variant, url, cfg.pubsub_warmup, cfg.pubsub_count, name=f"sub-{variant}")
    try:
        _expect(subscriber.recv(60), f"subscriber {variant}")
        publisher = Child(publisher_main, url, cfg.pubsub_warmup + cfg.pubsub_count, name="publisher")
        try:
            _expect(publisher.recv(120), "publisher")
        finally:
            publisher.join()
        subscriber.send("go")
        result: dict[str, float] = _expect(subscriber.recv(180), f"subscriber {variant}")
    finally:
        subscriber.join()
    return result


# -- JetStream consume ---------------------------------------------------------------------------


def consumer_main(conn: Any, variant: str, url: str, durable: str, warmup: int, count: int) -> None:
    """Child: consume the pre-published events on a fresh durable; report rate and CPU between marks."""

    async def body() -> None:
        counter = Counter(warmup=warmup, target=warmup + count)
        counter.done = asyncio.Event()
        if variant == "shipkit":
            from shipkit import Service
            from shipkit.service.runtime import Runtime

            service = Service("benchev")

            @service.on_event("bench.>", durable=durable)
            async def on_tick(event: ShipEvent) -> None:
                counter.tick()

            runtime = Runtime(service, url, graceful_timeout_s=1.0)
            await runtime.start()
            await _wait_until_done(counter)
            await runtime.shutdown()
        else:
            import nats

            nc = await nats.connect(url)
            js = nc.jetstream()
            psub = await js.pull_subscribe(f"{EVENT_PREFIX}.bench.>", durable=durable, stream=EVENT_STREAM)

            async def pull() -> None:
                while not counter.done.is_set():  # type: ignore[union-attr]
                    try:
                        batch = await psub.fetch(100, timeout=1)
                    except nats.errors.TimeoutError:
                        continue
                    for msg in batch:
                        ShipEvent.model_validate_json(msg.data)
                        counter.tick()
                        await msg.ack()

            puller = asyncio.create_task(pull())
            await _wait_until_done(counter)
            puller.cancel()
            await asyncio.gather(puller, return_exceptions=True)
            await nc.close()
        conn.send(_window_result(counter, count))

    _child(conn, body)


async def _prepublish_events(url: str, total: int) -> None:
    """Publish ``total`` ShipEvents to the event bus once (pipelined, acks awaited in bulk)."""
    from shipkit.config import NatsConfig, StreamConfig
    from shipkit.connection import ConnectionManager

    manager = ConnectionManager(NatsConfig.from_url(url))
    await manager.connect()
    try:
        await manager.ensure_stream(StreamConfig.event_bus(name=EVENT_STREAM, prefix=EVENT_PREFIX))
        js = manager.jetstream
        subject = f"{EVENT_PREFIX}.{EVENT_TYPE}"
        for seq in range(total):
            event = ShipEvent.new(EVENT_TYPE, {"seq": seq, "value": 3.14159, "unit": "C"}, source="bench")
            await js.publish_async(subject, event.to_json())
        await asyncio.wait_for(js.publish_async_completed(), 60)
        info = await js.stream_info(EVENT_STREAM)
        if info.state.messages != total:
            raise RuntimeError(f"expected {total} events in {EVENT_STREAM}, found {info.state.messages}")
    finally:
        await manager.close()


async def _delete_consumer(url: str, durable: str) -> None:
    import nats

    nc = await nats.connect(url)
    try:
        await nc.jetstream().delete_consumer(EVENT_STREAM, durable)
    except nats.js.errors.NotFoundError:
        pass
    finally:
        await nc.close()


def run_events(url: str, variant: str, run_id: int, cfg: Config) -> dict[str, float]:
    """One measurement: a fresh consumer process on a fresh durable, deleted afterwards."""
    durable = f"bench_{variant}_{run_id}"
    consumer = Child(consumer_main, variant, url, durable, cfg.event_warmup, cfg.event_count, name=f"cons-{variant}")
    try:
        result: dict[str, float] = _expect(consumer.recv(180), f"consumer {variant}")
    finally:
        consumer.join()
        asyncio.run(_delete_consumer(url, durable))
    return result


def on_event_available() -> str | None:
    """None if ``@service.on_event`` can run here, else why not."""
    try:
        import shipkit.primitives.eventbus  # noqa: F401
    except ImportError as exc:
        return f"shipkit.primitives.eventbus is not importable ({exc})"
    return None


# -- dispatch alone, in process ----------------------------------------------------------------


class _StubClient:
    """Stands in for a nats-py client: records subscription callbacks, publishes nowhere."""

    def __init__(self) -> None:
        self.callbacks: dict[str, Callable[[Any], Awaitable[None]]] = {}

    async def subscribe(self, subject: str, queue: str = "", cb: Any = None) -> Any:
        self.callbacks[subject] = cb
        return self

    async def publish(self, subject: str, payload: bytes = b"", reply: str = "", headers: Any = None) -> None:
        return None


async def _dispatch_costs(repeats: int, count: int) -> list[list[str]]:
    """CPU per message of the callback layers alone (no socket, no server): raw vs shipkit.

    Uses shipkit's real wiring (``Runtime._start_requests``/``_start_messages`` subscribe the
    router and endpoints) on a stub client; private names, so this may need updating with them.
    """
    from nats.aio.msg import Msg

    from shipkit import Service
    from shipkit.service.runtime import Runtime

    stub = _StubClient()
    service = Service("bench", prefix="bench.sk")

    @service.handler("quote")
    async def quote(order: Order) -> Quote:
        return price(order)

    @service.on_message(PUBSUB_SUBJECT)
    async def on_tick(data: dict[str, Any]) -> None:
        return None

    runtime = Runtime(service, "nats://127.0.0.1:4222")
    runtime._client = stub
    await runtime._start_requests()
    await runtime._start_messages()

    async def raw_respond(msg: Any) -> None:
        order = Order.model_validate_json(msg.data)
        await msg.respond(price(order).model_dump_json().encode())

    async def raw_receive(msg: Any) -> None:
        json.loads(msg.data)

    cases = [
        ("request -> reply", "raw", raw_respond, RR_SUBJECTS["shipkit"], ORDER_BODY, "_INBOX.x.y"),
        ("request -> reply", "shipkit", stub.callbacks["bench.sk.>"], RR_SUBJECTS["shipkit"], ORDER_BODY, "_INBOX.x.y"),
        ("message (JSON dict)", "raw", raw_receive, PUBSUB_SUBJECT, TICK_BODY, ""),
        ("message (JSON dict)", "shipkit", stub.callbacks[PUBSUB_SUBJECT], PUBSUB_SUBJECT, TICK_BODY, ""),
    ]
    best: dict[tuple[str, str], float] = {}
    for _ in range(repeats):
        for title, variant, callback, subject, body, reply in cases:
            msgs = [Msg(_client=stub, subject=subject, reply=reply, data=body) for _ in range(count)]
            started = time.process_time()
            for msg in msgs:
                await callback(msg)
            cost = (time.process_time() - started) / count * 1e6
            best[title, variant] = min(cost, best.get((title, variant), math.inf))
    rows = []
    for title in dict.fromkeys(t for t, _ in best):
        raw, shipkit = best[title, "raw"], best[title, "shipkit"]
        rows.append([title, fmt_us(raw), fmt_us(shipkit), f"{shipkit - raw:+.2f}"])
    return rows


def report_dispatch(repeats: int = 7, count: int = 50_000) -> int:
    """Print the in-process dispatch costs (``--dispatch``)."""
    warm_allocator()
    quiet_logging()
    rows = asyncio.run(_dispatch_costs(repeats, count))
    print(f"callback layers alone, in process, no network: CPU µs per message, best of {repeats} x {count}")
    print(machine_note())
    print()
    print_table(["path", "raw µs", "shipkit µs", "shipkit - raw µs"], rows)
    return 0


# -- orchestration ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """Sizes and repeats for one run."""

    repeats: int
    warmup_s: float
    duration_s: float
    pubsub_warmup: int
    pubsub_count: int
    event_warmup: int
    event_count: int
    budget_s: float
    quiet_cores: float = 0.1
    retries: int = 2

    @classmethod
    def full(cls) -> Config:
        """7 repeats, 2.5 s request-reply windows, 150 000 messages, 50 000 events: ~6-9 minutes."""
        return cls(7, 0.5, 2.5, 10_000, 150_000, 5_000, 50_000, budget_s=390.0)

    @classmethod
    def quick(cls) -> Config:
        """2 repeats, 1 s windows, 50 000 messages, 20 000 events, one retry: ~1-2 minutes."""
        return cls(2, 0.3, 1.0, 5_000, 50_000, 2_000, 20_000, budget_s=40.0, retries=1)


@dataclass
class Row:
    """One workload: its variants (raw first) and the per-repeat results of each."""

    key: str
    title: str
    variants: list[str]
    runner: Callable[[str, str, int], dict[str, float]]
    results: dict[str, list[dict[str, float]]] = field(default_factory=dict)


def build_rows(url: str, cfg: Config, skip: set[str]) -> list[Row]:
    """The rows of the table, in the order they are measured within a repeat."""
    three, two = ["raw", "shipkit", "faststream"], ["raw", "shipkit"]
    rows = [
        Row("rr1", "request-reply, 1 in flight", three, lambda v, i: run_request_reply(url, v, 1, cfg)),
        Row("rr64", "request-reply, 64 in flight", three, lambda v, i: run_request_reply(url, v, 64, cfg)),
        Row("pubsub", "core pub/sub receive (on_message)", two, lambda v, i: run_pubsub(url, v, cfg)),
        Row("events", "JetStream consume + ack (on_event)", two, lambda v, i: run_events(url, v, i, cfg)),
    ]
    return [row for row in rows if row.key not in skip]


def measure(rows: list[Row], cfg: Config) -> int:
    """Repeat every row; within a repeat alternate the variants, rotating their order each time.

    Before each measurement wait for the machine to be quiet; a measurement during which other
    processes took more than ``cfg.quiet_cores`` is repeated (up to ``cfg.retries`` times, and only
    while the run is within its time budget). Returns the number of repeated measurements.
    """
    meter = ForeignLoad()
    budget_end = time.monotonic() + cfg.budget_s
    run_id = retried = 0
    for repeat in range(cfg.repeats):
        for row in rows:
            shift = repeat % len(row.variants)
            for variant in row.variants[shift:] + row.variants[:shift]:
                for attempt in range(cfg.retries + 1):
                    run_id += 1
                    meter.wait_quiet(cfg.quiet_cores, limit_s=10.0 if time.monotonic() < budget_end else 0.0)
                    meter.start()
                    result = row.runner(variant, run_id)
                    result["others"] = meter.stop()
                    _progress(repeat, cfg, row, variant, result)
                    if result["others"] <= cfg.quiet_cores or time.monotonic() > budget_end:
                        break
                    if attempt < cfg.retries:
                        retried += 1
                row.results.setdefault(variant, []).append(result)
    return retried


def _progress(repeat: int, cfg: Config, row: Row, variant: str, result: dict[str, float]) -> None:
    extra = f" p50 {fmt_us(result['p50_us'])} µs" if "p50_us" in result else ""
    lost = f" LOST {result['lost']:.0f}" if result.get("lost") else ""
    disturbed = f"  (others used {result['others']:.2f} cores)" if result["others"] > cfg.quiet_cores else ""
    print(
        f"  [{repeat + 1}/{cfg.repeats}] {row.key:<7} {variant:<10} {fmt_rate(result['rate']):>9} /s{extra}"
        f"  cpu {fmt_us(result['cpu_us'])} µs/msg{lost}{disturbed}",
        file=sys.stderr,
        flush=True,
    )


def _kept_repeats(row: Row, quiet_cores: float) -> list[int]:
    """Repeats in which no variant of the row was disturbed, if at least half (and two) were; else all.

    Keeping or dropping whole repeats treats every variant alike: no ratio compares one variant's
    quiet runs with another's disturbed ones.
    """
    count = min((len(runs) for runs in row.results.values()), default=0)
    quiet = [i for i in range(count) if all(runs[i]["others"] <= quiet_cores for runs in row.results.values())]
    return quiet if len(quiet) >= max(2, (count + 1) // 2) else list(range(count))


TABLE_HEADERS = [
    "workload",
    "variant",
    "msg/s",
    "min-max",
    "x raw",
    "paired",
    "p50 µs",
    "p99 µs",
    "CPU µs/msg",
    "CPU x raw",
    "runs",
]


def summarise(rows: list[Row], quiet_cores: float) -> tuple[list[list[str]], list[dict[str, Any]]]:
    """Table rows (see ``TABLE_HEADERS``) and the same numbers as JSON-able records.

    Medians are over the repeats in which no variant was disturbed when at least half of the
    repeats were undisturbed (``runs`` says how many were used), else over all repeats.
    """
    table: list[list[str]] = []
    records: list[dict[str, Any]] = []
    for row in rows:
        repeats = _kept_repeats(row, quiet_cores)
        raw_kept = [row.results["raw"][i] for i in repeats]
        raw_rate, raw_cpu = median([r["rate"] for r in raw_kept]), median([r["cpu_us"] for r in raw_kept])
        for variant in row.variants:
            runs = row.results.get(variant, [])
            kept = [runs[i] for i in repeats]
            rates = [r["rate"] for r in kept if not math.isnan(r["rate"])]
            record = {
                "workload": row.key,
                "variant": variant,
                "rate": median(rates),
                "rate_ratio": median(rates) / raw_rate,
                "paired_ratio": median([r["rate"] / w["rate"] for r, w in zip(kept, raw_kept, strict=True)]),
                "p50_us": median([r.get("p50_us", math.nan) for r in kept]),
                "p99_us": median([r.get("p99_us", math.nan) for r in kept]),
                "cpu_us": median([r["cpu_us"] for r in kept]),
                "cpu_ratio": median([r["cpu_us"] for r in kept]) / raw_cpu,
                "runs_used": len(kept),
                "runs": runs,
            }
            records.append(record)
            table.append(
                [
                    row.title,
                    variant,
                    fmt_rate(record["rate"]),
                    f"{fmt_rate(min(rates))}-{fmt_rate(max(rates))}" if rates else "-",
                    fmt_ratio(record["rate_ratio"]),
                    fmt_ratio(record["paired_ratio"]),
                    fmt_us(record["p50_us"]),
                    fmt_us(record["p99_us"]),
                    fmt_us(record["cpu_us"]),
                    fmt_ratio(record["cpu_ratio"]),
                    f"{len(kept)}/{len(runs)}",
                ]
            )
    return table, records


def print_report(rows: list[Row], cfg: Config, title: str, retried: int) -> list[dict[str, Any]]:
    """Print the heading, the legend and the table; return the records."""
    table, records = summarise(rows, cfg.quiet_cores)
    print()
    print(title)
    print(machine_note())
    print(
        "x raw = ratio of the medians; paired = median of the per-repeat ratios; CPU = CPU per message of the "
        "responder/subscriber/consumer process; runs = repeats used / made: medians use the repeats in which "
        f"other processes took <= {cfg.quiet_cores} cores during every variant's measurement, when at least half "
        f"were such; {retried} disturbed measurements were repeated."
    )
    print()
    print_table(TABLE_HEADERS, table)
    return records


def report_saved(path: Path, quiet_cores: float | None) -> int:
    """Print the table of a run saved with ``--json`` (optionally with another quiet threshold)."""
    saved = json.loads(path.read_text())
    cfg = Config(**saved["config"])
    if quiet_cores is not None:
        cfg = dataclasses.replace(cfg, quiet_cores=quiet_cores)
    runs = {(record["workload"], record["variant"]): record["runs"] for record in saved["rows"]}
    rows = [row for row in build_rows("", cfg, set()) if (row.key, "raw") in runs]
    for row in rows:
        row.results = {variant: runs[row.key, variant] for variant in row.variants if (row.key, variant) in runs}
    print_report(rows, cfg, f"saved run {path} ({saved['machine']})", saved.get("retried", 0))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, start the server, measure, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="2 repeats and shorter windows (~1-2 minutes)")
    parser.add_argument("--repeats", type=int, help="override the number of repeats")
    parser.add_argument(
        "--only", action="append", choices=["rr1", "rr64", "pubsub", "events"], help="run only these rows (repeatable)"
    )
    parser.add_argument("--json", type=Path, help="also write the medians and every run to this file")
    parser.add_argument("--report", type=Path, help="only print the table of a run saved with --json")
    parser.add_argument("--quiet-cores", type=float, help="cores other processes may use in a kept measurement")
    parser.add_argument("--dispatch", action="store_true", help="only measure the callback layers in process")
    args = parser.parse_args(argv)
    if args.report:
        return report_saved(args.report, args.quiet_cores)
    if args.dispatch:
        return report_dispatch()
    cfg = Config.quick() if args.quick else Config.full()
    if args.repeats:
        cfg = dataclasses.replace(cfg, repeats=args.repeats)
    if args.quiet_cores is not None:
        cfg = dataclasses.replace(cfg, quiet_cores=args.quiet_cores)
    skip = {"rr1", "rr64", "pubsub", "events"} - set(args.only) if args.only else set()
    reason = on_event_available()
    if reason and "events" not in skip:
        print(f"note: skipping the on_event row: {reason}", file=sys.stderr)
        skip.add("events")
    warm_allocator()
    quiet_logging()
    started = time.monotonic()
    with embedded_server() as server:
        print(f"nats-server at {server.url}; {machine_note()}", file=sys.stderr, flush=True)
        if "events" not in skip:
            asyncio.run(_prepublish_events(server.url, cfg.event_warmup + cfg.event_count))
        rows = build_rows(server.url, cfg, skip)
        retried = measure(rows, cfg)
    mode = "quick" if args.quick else "full"
    title = f"shipkit runtime benchmark ({mode}: {cfg.repeats} repeats; {time.monotonic() - started:.0f} s)"
    records = print_report(rows, cfg, title, retried)
    if args.json:
        report = {"config": dataclasses.asdict(cfg), "machine": machine_note(), "retried": retried, "rows": records}
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
