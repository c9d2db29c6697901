"""A real redis-server on a free loopback port for the shared-state tests.

Debian's ``redis-server`` (``.ci/run`` installs it); tests that need it skip,
saying why, only where it (or redis-py) is missing. No persistence
(``--save "" --appendonly no``), so a restart is an empty Redis, as a crashed
one without persistence comes back.
"""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence

import pytest

from tests.gateway.servers import free_port

REDIS_SERVER = shutil.which("redis-server")

needs_redis = pytest.mark.skipif(
    REDIS_SERVER is None or importlib.util.find_spec("redis") is None,
    reason="needs Debian's redis-server (apt-get install redis-server; .ci/run does) and "
    "redis-py (the redis extra)",
)


class RedisServer:
    """``redis-server`` as a child process; :meth:`restart` keeps its port."""

    def __init__(self, extra: Sequence[str] = (), cwd: str | None = None) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self._extra, self._cwd = list(extra), cwd

    def start(self) -> RedisServer:
        """Start it and wait until it answers PING."""
        assert REDIS_SERVER is not None
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning", *self._extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self._cwd,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not self.ping():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.01)
        return self

    def ping(self) -> bool:
        """Whether it answers now."""
        import redis

        client = redis.Redis(port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL) and wait for the process."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    def restart(self) -> None:
        """Stop it and start an empty one on the same port."""
        self.stop()
        self.start()

    def client(self):  # type: ignore[no-untyped-def]
        """A synchronous client (for inspecting keys)."""
        import redis

        return redis.Redis(port=self.port, decode_responses=True)


@contextlib.contextmanager
def redis_server() -> Iterator[RedisServer]:
    """A running redis-server, stopped at the end."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


class RedisClusterServers:
    """A Redis Cluster of ``nodes`` primaries (no replicas) on free loopback ports.

    Each node gets its own cluster bus port (``cluster-port``) and config file in
    a temporary folder; the slots are split evenly and the nodes meet, then
    :meth:`start` waits until every node reports ``cluster_state:ok``.
    ``url`` is the first node's, as a user would give one seed node.
    """

    def __init__(self, nodes: int = 3) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="fairserve-redis-cluster-")
        self.bus_ports = [free_port() for _ in range(nodes)]
        self.nodes = []
        for i, bus in enumerate(self.bus_ports):
            options = ["--cluster-enabled", "yes", "--cluster-port", str(bus),
                       "--cluster-config-file", f"nodes-{i}.conf", "--cluster-node-timeout", "2000"]  # fmt: skip
            self.nodes.append(RedisServer(options, cwd=self._dir.name))
        self.url = f"redis://127.0.0.1:{self.nodes[0].port}"

    def start(self) -> RedisClusterServers:
        """Start the nodes, give each its slots, join them; wait until the cluster is ok."""
        import redis

        for node in self.nodes:
            node.start()
        clients = [redis.Redis(port=n.port, decode_responses=True) for n in self.nodes]
        step = 16384 // len(self.nodes)
        for i, client in enumerate(clients):
            last = 16383 if i == len(clients) - 1 else (i + 1) * step - 1
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", i * step, last)
        for node, bus in zip(self.nodes[1:], self.bus_ports[1:], strict=True):
            clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", node.port, bus)
        for client in clients:
            client.close()
        self._wait_ok("the Redis Cluster did not come up")
        return self

    def _wait_ok(self, failure: str) -> None:
        """Wait (20 s at most) until every node reports ``cluster_state:ok``."""
        import redis

        clients = [redis.Redis(port=n.port, decode_responses=True) for n in self.nodes]
        try:
            deadline = time.monotonic() + 20
            while not all(c.cluster("info")["cluster_state"] == "ok" for c in clients):
                if time.monotonic() > deadline:
                    raise RuntimeError(failure)
                time.sleep(0.05)
        finally:
            for client in clients:
                client.close()

    def restart(self, index: int) -> None:
        """Restart node ``index`` empty (its slots kept: its config file stays); wait until
        the cluster is ok again."""
        self.nodes[index].restart()
        self._wait_ok("the Redis Cluster did not come back")

    def stop(self) -> None:
        """Stop every node and remove their folder."""
        for node in self.nodes:
            node.stop()
        self._dir.cleanup()
