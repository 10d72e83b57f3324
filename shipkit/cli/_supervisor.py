"""``shipkit run --workers N`` and ``--reload``: a parent process supervising ``shipkit run`` children.

Each child is the same command line without ``--workers``/``--reload``, in its own session so a
terminal's Ctrl-C reaches only the supervisor, which forwards it: SIGINT and SIGTERM fan out to
every child (a second SIGINT too, so children skip their grace period as a single process would).

- ``--workers N``: N children; one that crashes (non-zero exit other than the startup-failure
  code) is restarted; one that cannot start stops the whole group. The exit code is 0 when every
  child always exited cleanly, 3 when a child could not start, else 1.
- ``--reload``: one child, restarted (SIGTERM, then a fresh one) whenever a ``.py`` file under
  the watched directory changes (the ``watchfiles`` package, the ``reload`` extra).

When no server URL is configured, the supervisor starts the one embedded server itself, so the
children share it instead of racing for localhost:4222.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from shipkit.cli._common import EXIT_STARTUP_FAILURE
from shipkit.logging import get_logger
from shipkit.server import die_with_parent

__all__ = ["child_argv", "reload", "supervise"]

log = get_logger("shipkit.supervisor")

_POLL_S = 0.2  # how often the supervisor looks at its children between signals
_FLAGS_WITH_VALUE = ("--workers",)
_FLAGS = ("--reload",)


def child_argv(argv: list[str]) -> list[str]:
    """The child's command line: ``argv`` (after ``shipkit``) without ``--workers N`` and ``--reload``."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in _FLAGS_WITH_VALUE:
            skip = True
        elif arg in _FLAGS or any(arg.startswith(f"{flag}=") for flag in _FLAGS_WITH_VALUE):
            continue
        else:
            out.append(arg)
    return [sys.executable, "-m", "shipkit.cli", *out]


class _Signals:
    """SIGINT/SIGTERM seen by the supervisor, forwarded to the children as they come."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.children: list[subprocess.Popen[bytes]] = []

    def forward(self, signum: int, frame: FrameType | None) -> None:
        log.info("supervisor.signal", signal=signal.Signals(signum).name, children=len(self.children))
        self.stop.set()
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signum)


@contextmanager
def _capture(signals: _Signals) -> Iterator[None]:
    previous = {signum: signal.signal(signum, signals.forward) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _spawn(signals: _Signals, argv: list[str], env: dict[str, str], index: int) -> None:
    """Start child ``index`` (replacing a dead one); one born after a stop signal is stopped at once."""
    preexec = die_with_parent(os.getpid(), signal.SIGTERM) if sys.platform == "linux" else None
    child = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=preexec)
    if index < len(signals.children):
        signals.children[index] = child
    else:
        signals.children.append(child)
    log.info("worker.started", worker=index, pid=child.pid)
    if signals.stop.is_set():  # the signal came while we were starting it: it never saw it
        child.send_signal(signal.SIGTERM)


def _wait_all(children: list[subprocess.Popen[bytes]]) -> list[int]:
    return [child.wait() for child in children]


def supervise(argv: list[str], workers: int, env: dict[str, str]) -> int:
    """Run ``workers`` children of ``argv`` until a signal; restart crashed ones. Returns the exit code."""
    signals = _Signals()
    crashed = False
    with _capture(signals):
        for index in range(workers):
            _spawn(signals, argv, env, index)
        while not signals.stop.wait(_POLL_S):
            for index, child in enumerate(signals.children):
                code = child.poll()
                if code is None or signals.stop.is_set():
                    continue
                if code == EXIT_STARTUP_FAILURE:
                    log.error("worker.startup_failed", worker=index, pid=child.pid, exit_code=code)
                    signals.forward(signal.SIGTERM, None)
                    _wait_all(signals.children)
                    return EXIT_STARTUP_FAILURE
                crashed = crashed or code != 0
                if code == 0:  # it stopped on its own, cleanly: nothing to repair
                    log.info("worker.exited", worker=index, pid=child.pid, exit_code=code)
                    continue
                log.error("worker.crashed", worker=index, pid=child.pid, exit_code=code, action="restarting")
                _spawn(signals, argv, env, index)
            if all(child.poll() == 0 for child in signals.children):
                break
        codes = _wait_all(signals.children)
    failed = crashed or any(code != 0 for code in codes)
    log.info("supervisor.stopped", exit_codes=codes, crashed=crashed)
    return 1 if failed else 0


def reload(argv: list[str], watch_dir: Path, env: dict[str, str]) -> int:
    """Run one child of ``argv``; restart it whenever a ``.py`` file under ``watch_dir`` changes."""
    try:
        from watchfiles import PythonFilter, watch  # optional: the `reload` extra
    except ImportError as exc:  # pragma: no cover - the dev environment has it
        raise SystemExit(f"--reload needs the watchfiles package: pip install 'shipkit[reload]' ({exc})") from None
    signals = _Signals()
    with _capture(signals):
        _spawn(signals, argv, env, 0)
        log.info("reload.watching", directory=str(watch_dir))
        for changes in watch(
            watch_dir,
            watch_filter=PythonFilter(),
            stop_event=signals.stop,
            yield_on_timeout=True,
            rust_timeout=int(_POLL_S * 1000),
            raise_interrupt=False,
        ):
            if not changes or signals.stop.is_set():
                continue
            files = sorted(os.path.relpath(path, watch_dir) for _, path in changes)
            log.info("reload.restarting", changed=files)
            child = signals.children[0]
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
                child.wait()
            if not signals.stop.is_set():
                _spawn(signals, argv, env, 0)
        codes = _wait_all(signals.children)
    return 0 if all(code == 0 for code in codes) else 1
