"""A JetStream cluster of embedded servers on loopback, for tests and benchmarks: :class:`NatsCluster`.

Each node is a :class:`~shipkit.server.NatsServer` with its own client port, route port and
store directory; :meth:`NatsCluster.start` returns once every node knows the JetStream meta
leader, so streams can be created at once. Helpers kill, restart and find the leader of a
stream, which is what failover tests need. ``shipkit.testing`` wraps it in the
``shipkit_cluster`` fixture.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from shipkit.errors import ConfigurationError, NatsServerError
from shipkit.server import NatsServer

__all__ = ["NatsCluster"]

_META_LEADER = "metadata leader"  # "Self is new JetStream cluster metadata leader" / "... new metadata leader: n0"


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port


class NatsCluster:
    """``size`` JetStream nodes routed to each other on ``host``.

    Use it as a context manager (every node is stopped and the stores removed on exit, also
    when the body fails)::

        with NatsCluster() as cluster:
            config = NatsConfig(servers=cluster.urls)

    Args:
        size: number of nodes (3 tolerates the loss of one).
        host: the interface every node listens on.
        store_dir: parent of the nodes' store directories (a temporary one by default, removed
            by :meth:`cleanup`).
        name: the cluster name; nodes are called ``{name}-0`` ...
        ready_timeout_s: how long :meth:`start` waits for the nodes and the meta leader.
    """

    def __init__(
        self,
        size: int = 3,
        *,
        host: str = "127.0.0.1",
        store_dir: str | Path | None = None,
        name: str = "shipkit",
        ready_timeout_s: float = 30.0,
    ) -> None:
        if size < 1:
            raise ConfigurationError(f"a cluster needs at least one node, got size={size}")
        self.name = name
        self.host = host
        self.ready_timeout_s = ready_timeout_s
        self._own_store = store_dir is None
        self.store_dir = Path(store_dir) if store_dir is not None else Path(tempfile.mkdtemp(prefix="shipkit-cluster-"))
        routes = [_free_port(host) for _ in range(size)]
        clients = [_free_port(host) for _ in range(size)]
        self.nodes = [
            NatsServer(
                port=clients[i],
                host=host,
                store_dir=self.store_dir / f"n{i}",
                extra_args=self._node_args(i, routes),
                ready_timeout_s=ready_timeout_s,
                stop_timeout_s=5.0,
            )
            for i in range(size)
        ]

    def _node_args(self, index: int, routes: list[int]) -> list[str]:
        others = ",".join(f"nats://{self.host}:{port}" for i, port in enumerate(routes) if i != index)
        return [
            "--server_name",
            self.node_name(index),
            "--cluster_name",
            self.name,
            "--cluster",
            f"nats://{self.host}:{routes[index]}",
            "--routes",
            others,
        ]

    def node_name(self, index: int) -> str:
        """The server name of node ``index`` (what stream info reports as leader)."""
        return f"{self.name}-{index}"

    @property
    def urls(self) -> list[str]:
        """Client URLs of every node (pass them all: the client fails over between them)."""
        return [node.url for node in self.nodes]

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> NatsCluster:
        """Start every node (in parallel) and wait until each knows the JetStream meta leader."""
        failures: list[BaseException] = []

        def start_one(node: NatsServer) -> None:
            try:
                node.start()
            except BaseException as exc:  # reported below, after every thread ended
                failures.append(exc)

        threads = [threading.Thread(target=start_one, args=(node,)) for node in self.nodes if not node.is_running]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            self.stop()
            raise NatsServerError(f"cluster node failed to start: {failures[0]}") from failures[0]
        for index in range(len(self.nodes)):
            self.wait_joined(index)
        return self

    def wait_joined(self, index: int) -> None:
        """Block until node ``index`` logged the JetStream meta leader (bounded by ``ready_timeout_s``)."""
        node = self.nodes[index]
        deadline = time.monotonic() + self.ready_timeout_s
        while _META_LEADER not in node.log_tail:
            if not node.is_running:
                raise NatsServerError(f"cluster node {self.node_name(index)} exited:\n{node.log_tail}")
            if time.monotonic() > deadline:
                raise NatsServerError(
                    f"cluster node {self.node_name(index)} saw no JetStream meta leader within "
                    f"{self.ready_timeout_s}s:\n{node.log_tail}"
                )
            time.sleep(0.02)  # polling a log buffer another thread fills; bounded above

    def kill(self, index: int) -> None:
        """SIGKILL node ``index`` (a crash); :meth:`restart` brings it back with its store."""
        self.nodes[index].kill()

    def restart(self, index: int) -> None:
        """Start node ``index`` again on the same ports and store; return once it rejoined."""
        node = self.nodes[index]
        node.stop()
        node.start()
        self.wait_joined(index)

    def stop(self) -> None:
        """Stop every node (errors of one do not keep the others running)."""
        errors: list[BaseException] = []
        for node in reversed(self.nodes):
            try:
                node.stop()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise NatsServerError(f"stopping the cluster failed: {errors[0]}") from errors[0]

    def cleanup(self) -> None:
        """Stop every node and remove a temporary store directory."""
        try:
            self.stop()
        finally:
            for node in self.nodes:
                node.cleanup()
            if self._own_store:
                shutil.rmtree(self.store_dir, ignore_errors=True)

    def __enter__(self) -> NatsCluster:
        try:
            return self.start()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()

    # -- leaders ---------------------------------------------------------------------------

    def index_of(self, server_name: str) -> int:
        """The node index of a server name as stream info reports it."""
        for index in range(len(self.nodes)):
            if self.node_name(index) == server_name:
                return index
        raise NatsServerError(f"{server_name!r} is not a node of cluster {self.name!r}")

    async def stream_leader(self, client: Any, stream: str, *, timeout_s: float = 15.0) -> int:
        """The index of the node leading ``stream``, asked over ``client`` (a nats-py client).

        Waits (bounded by ``timeout_s``) while the stream has no leader, e.g. during an election.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        last: object = None
        while loop.time() < deadline:
            try:
                msg = await client.request(f"$JS.API.STREAM.INFO.{stream}", b"", timeout=1.0)
                info = json.loads(msg.data)
                leader = (info.get("cluster") or {}).get("leader")
                if leader:
                    return self.index_of(leader)
                last = info.get("error") or "no leader yet"
            except Exception as exc:  # an election or a reconnect in progress: ask again
                last = exc
            await asyncio.sleep(0.05)
        raise NatsServerError(f"stream {stream!r} has no leader after {timeout_s}s (last answer: {last})")
