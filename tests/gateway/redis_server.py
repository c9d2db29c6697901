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
import time
from collections.abc import Iterator

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

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        """Start it and wait until it answers PING."""
        assert REDIS_SERVER is not None
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
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
