"""shipkit.serve: the embedded development server default and the programmatic stop."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import nats
import pytest

import shipkit.service.runner as runner
from shipkit import Service


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _service() -> Service:
    service = Service("embedded")

    @service.handler("ping")
    async def ping() -> str:
        return "pong"

    return service


async def _call_until_answered(url: str, subject: str) -> bytes:
    """Request ``subject`` until a responder exists (bounded: the service is starting)."""
    async with asyncio.timeout(10):
        while True:
            try:
                nc = await nats.connect(url, allow_reconnect=False, connect_timeout=1)
            except Exception:  # the embedded server is not listening yet
                await asyncio.sleep(0.05)
                continue
            try:
                return (await nc.request(subject, b"", timeout=1)).data
            except nats.errors.NoRespondersError:
                await asyncio.sleep(0.05)
            finally:
                await nc.close()


async def test_serve_starts_an_embedded_server_when_nothing_listens(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With no URL configured and nothing listening, serve() starts nats-server there, with its store in data_dir."""
    url = f"nats://127.0.0.1:{_free_port()}"
    monkeypatch.setattr(runner, "EMBEDDED_URL", url)
    monkeypatch.setattr(runner, "default_nats_url", lambda: url)
    service = _service()
    task = asyncio.create_task(runner.serve(service, data_dir=tmp_path, handle_signals=False))
    try:
        assert await _call_until_answered(url, "embedded.ping") == b"pong"
        assert (tmp_path / "nats" / "jetstream").is_dir()
    finally:
        task.cancel()  # cancelling serve() shuts the runtime down in order, then stops the server
        with pytest.raises(asyncio.CancelledError):
            await task
    assert not runner._listening(url)


async def test_serve_does_not_embed_when_told_not_to(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """embedded=False with nothing listening fails with a connection error instead of starting a server."""
    from shipkit import NatsConnectionError

    url = f"nats://127.0.0.1:{_free_port()}"
    monkeypatch.setattr(runner, "EMBEDDED_URL", url)
    monkeypatch.setattr(runner, "default_nats_url", lambda: url)
    with pytest.raises(NatsConnectionError):
        await runner.serve(_service(), data_dir=tmp_path, handle_signals=False, embedded=False)
    assert not (tmp_path / "nats").exists()
