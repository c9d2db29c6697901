"""Real servers on loopback for the gateway tests: uvicorn in a thread, or a subprocess."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import uvicorn

from fairserve.engine_server.server import EngineSettings, create_engine_app
from fairserve.sim.config import EngineConfig

FAST_ENGINE = EngineSettings(
    model="Qwen2.5-1.5B",
    gpu="H100-80GB",
    engine=EngineConfig(max_num_seqs=16, max_num_batched_tokens=2048),
)


def free_socket() -> socket.socket:
    """A bound loopback socket on a free port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def free_port() -> int:
    """A port that was free a moment ago."""
    with contextlib.closing(free_socket()) as sock:
        return int(sock.getsockname()[1])


class ServerThread:
    """An ASGI app served by uvicorn on a free loopback port, in a background thread."""

    def __init__(self, app: Any) -> None:
        self.sock = free_socket()
        self.port = int(self.sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop serving and wait for the thread (bounded)."""
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def engine_thread(settings: EngineSettings = FAST_ENGINE) -> Iterator[ServerThread]:
    """A simulated engine in this process."""
    with ServerThread(create_engine_app(settings)) as server:
        yield server


class Proc:
    """A ``python -m fairserve.cli.gateway ...`` subprocess on a given port."""

    def __init__(self, args: list[str], port: int, health_path: str = "/health") -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fairserve.cli.gateway", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
        )
        self.health_path = health_path

    def wait_ready(self, timeout_s: float = 20) -> Proc:
        """Poll the health path until it answers 200."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                out = self.proc.stdout.read().decode() if self.proc.stdout else ""
                raise RuntimeError(f"process exited with {self.proc.returncode}: {out}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + self.health_path, timeout=1).status_code == 200:
                    return self
            time.sleep(0.05)
        raise RuntimeError("process did not become ready")

    def kill(self) -> None:
        """Kill it at once."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        if self.proc.stdout:
            self.proc.stdout.close()

    def output(self) -> str:
        """Its output once it has exited."""
        return self.proc.stdout.read().decode() if self.proc.stdout else ""
