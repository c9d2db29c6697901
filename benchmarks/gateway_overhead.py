"""Latency the gateway adds over calling the engine directly, and its top sustained rate.

What is measured: a client sends streaming chat requests at a fixed rate
(constant inter-arrival gaps, open loop) to a *fake* OpenAI-compatible
upstream that answers each with 100 content chunks (one token each, all
written at once: its own latency is a few hundred microseconds), plus the
usage chunk and ``[DONE]``. E2E latency = request sent -> last byte of the
stream, measured by a minimal keep-alive HTTP/1.1 client (so the client's own
cost is small and the same for every path). The paths, side by side in one
run: direct to the upstream, through ``fairserve serve`` (fifo, one backend,
no limits in the way), through the Rust ``vllm-router`` (round robin over the
one upstream; installed into its own venv by this script), and with
``--litellm`` through LiteLLM's proxy (likewise). Added latency =
percentile(path) - percentile(direct) of the same repeat.

Before each measurement the path is warmed with 20 requests one after the
other (closed loop: no backlog is left for the measurement to inherit). Max
sustained rate: the highest offered rate (from a ladder) at which the path
completes >= 99% of the requests within the run plus one second, with a p99
under 250 ms. Added latency is reported only where the path completed >= 99%
of the requests at that rate (otherwise null: it did not sustain it). Paths
are measured one at a time, each proxy restarted per measurement; the whole
set is repeated ``--repeats`` times (path order rotated) and the figures are
medians over the repeats.

Every process shares the machine's cores (client, upstream, proxy): the
figures include that contention, as a real deployment on this box would.
Usage: ``python benchmarks/gateway_overhead.py [--json] [--duration-s 5] [--repeats 3]
[--no-vllm-router] [--litellm]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
TOKENS = 100
MODEL = "fake-model"
KEY = "sk-bench"
LADDER_RPS = (10, 20, 50, 100, 200, 400, 600, 800, 1000, 1300, 1600)


# ----------------------------------------------------------------- the fake upstream
FAKE_SERVER = r"""
import sys, json
import uvicorn
TOKENS = int(sys.argv[2])
head = b'data: {"id":"chatcmpl-f","object":"chat.completion.chunk","created":0,"model":"fake-model","choices":[{"index":0,"delta":{"content":" tok"},"logprobs":null,"finish_reason":null}]}\n\n'
tail = (b'data: {"id":"chatcmpl-f","object":"chat.completion.chunk","created":0,"model":"fake-model","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"length"}]}\n\n'
        b'data: {"id":"chatcmpl-f","object":"chat.completion.chunk","created":0,"model":"fake-model","choices":[],"usage":{"prompt_tokens":8,"completion_tokens":%d,"total_tokens":%d}}\n\n'
        b'data: [DONE]\n\n') % (TOKENS, TOKENS + 8)
BODY = head * TOKENS + tail
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            m = await receive()
            if m["type"] == "lifespan.startup": await send({"type": "lifespan.startup.complete"})
            else: await send({"type": "lifespan.shutdown.complete"}); return
    more = True
    while more:
        m = await receive(); more = m.get("more_body", False)
    path = scope["path"]
    if scope["method"] == "GET":
        body = b'{"object":"list","data":[{"id":"fake-model","object":"model"}]}' if "models" in path else b"ok"
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body}); return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
    await send({"type": "http.response.body", "body": BODY, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
"""


def free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(port: int, path: str, timeout_s: float = 60.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2).status_code < 500:
                return
        time.sleep(0.2)
    raise RuntimeError(f"port {port} did not answer {path}")


# ----------------------------------------------------------------- a lean client
class Conn:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def post_stream(self, request: bytes) -> bool:
        """Send one request and read the (chunked or sized) answer to its end; True if 200."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        ok = head.startswith(b"HTTP/1.1 200")
        lower = head.lower()
        if b"transfer-encoding: chunked" in lower:
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        else:
            start = lower.index(b"content-length:") + 15
            length = int(lower[start : lower.index(b"\r\n", start)])
            await self.reader.readexactly(length)
        return ok


async def run_rate(
    port: int, path_prefix: str, rate_rps: float, duration_s: float
) -> dict[str, Any]:
    """Open-loop constant-rate load; latencies of completed requests (s)."""
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                       "max_tokens": TOKENS, "stream": True}).encode()  # fmt: skip
    request = (
        f"POST {path_prefix}/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {KEY}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    idle: list[Conn] = []
    latencies: list[float] = []
    errors = 0
    n = int(rate_rps * duration_s)

    async def one(at: float) -> None:
        nonlocal errors
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        conn = idle.pop() if idle else Conn(*await asyncio.open_connection("127.0.0.1", port))
        start = time.perf_counter()
        try:
            ok = await conn.post_stream(request)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            errors += 1
            conn.writer.close()
            return
        latencies.append(time.perf_counter() - start)
        if not ok:
            errors += 1
        idle.append(conn)

    t0 = time.perf_counter() + 0.2
    tasks = [asyncio.ensure_future(one(t0 + i / rate_rps)) for i in range(n)]
    _, pending = await asyncio.wait(tasks, timeout=duration_s + 1.2)
    for task in pending:
        task.cancel()
    for conn in idle:
        conn.writer.close()
    lat = np.asarray(latencies) if latencies else np.asarray([np.nan])
    return {
        "rate_rps": rate_rps,
        "sent": n,
        "completed": len(latencies) - errors,
        "errors": errors,
        "p50_ms": None if not latencies else float(np.percentile(lat, 50) * 1e3),
        "p99_ms": None if not latencies else float(np.percentile(lat, 99) * 1e3),
    }


def measure(port: int, prefix: str, rate: float, duration_s: float) -> dict[str, Any]:
    return asyncio.run(run_rate(port, prefix, rate, duration_s))


async def _sequential(port: int, prefix: str, n: int) -> None:
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                       "max_tokens": TOKENS, "stream": True}).encode()  # fmt: skip
    request = (
        f"POST {prefix}/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {KEY}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    conn = Conn(*await asyncio.open_connection("127.0.0.1", port))
    try:
        for _ in range(n):
            await conn.post_stream(request)
    finally:
        conn.writer.close()


def warm_up(port: int, prefix: str, n: int = 20) -> None:
    """``n`` requests one after the other: warm caches and pools, leave no backlog."""
    asyncio.run(_sequential(port, prefix, n))


def sustained(port: int, prefix: str, duration_s: float) -> float:
    best = 0.0
    for rate in LADDER_RPS:
        r = measure(port, prefix, rate, duration_s)
        if r["completed"] < 0.99 * r["sent"] or r["p99_ms"] is None or not r["p99_ms"] < 250:
            break
        best = rate
    return best


# ----------------------------------------------------------------- the proxies
def start_gateway(upstream_port: int, tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    cfg = {
        "policy": "fifo",
        "models": [MODEL],
        "tenants": {"bench": {"api_key": KEY}},
        "backends": [
            {
                "url": f"http://127.0.0.1:{upstream_port}",
                "max_concurrency": 100000,
                "metrics": "off",
            }
        ],
        "dispatch": {"health_path": "/health", "health_interval_s": 5},
        "server": {"port": port},
    }
    path = tmp / "gateway.json"
    path.write_text(json.dumps(cfg))  # JSON is YAML
    proc = subprocess.Popen([sys.executable, "-m", "fairserve.cli.gateway", "serve", "--config",
                             str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    wait_http(port, "/healthz")
    return proc, port


def install_vllm_router(venv: Path) -> Path | None:
    """The Rust vllm-router (PyPI) in its own venv (reused if present); None if it cannot install."""
    exe = venv / "bin" / "vllm-router"
    if exe.exists():
        return exe
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "vllm-router"], check=True,
                       timeout=900)  # fmt: skip
    except (subprocess.SubprocessError, OSError) as exc:
        print(f"vllm-router could not be installed: {exc}", file=sys.stderr)
        return None
    return exe if exe.exists() else None


def start_vllm_router(
    exe: Path, upstream_port: int, tmp: Path
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen([str(exe), "--host", "127.0.0.1", "--port", str(port),
                             "--worker-urls", f"http://127.0.0.1:{upstream_port}",
                             "--policy", "round_robin", "--log-level", "error",
                             # its metrics listener on a free port too (default: a fixed one)
                             "--prometheus-host", "127.0.0.1",
                             "--prometheus-port", str(free_port())],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    wait_http(port, "/health")
    return proc, port


def install_litellm(venv: Path) -> Path | None:
    """LiteLLM's proxy in its own venv (reused if present); None if it cannot be installed."""
    exe = venv / "bin" / "litellm"
    if exe.exists():
        return exe
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "litellm[proxy]"], check=True,
                       timeout=900)  # fmt: skip
    except (subprocess.SubprocessError, OSError) as exc:
        print(f"LiteLLM could not be installed: {exc}", file=sys.stderr)
        return None
    return exe if exe.exists() else None


def start_litellm(exe: Path, upstream_port: int, tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    cfg = (
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{MODEL}\n"
        f"      api_base: http://127.0.0.1:{upstream_port}/v1\n"
        "      api_key: sk-upstream\n"
        "litellm_settings:\n  telemetry: false\n  drop_params: true\n"
        f"general_settings:\n  master_key: {KEY}\n"
    )
    path = tmp / "litellm.yaml"
    path.write_text(cfg)
    # Local cost map: no fetch from the internet at start-up (the machine may have none).
    env = dict(os.environ, LITELLM_LOG="ERROR", LITELLM_TELEMETRY="False",
               LITELLM_LOCAL_MODEL_COST_MAP="True")  # fmt: skip
    proc = subprocess.Popen([str(exe), "--config", str(path), "--port", str(port),
                             "--host", "127.0.0.1", "--num_workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)  # fmt: skip
    wait_http(port, "/health/liveliness", timeout_s=120)
    return proc, port


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


RATES_RPS = (5, 100, 400, 500)


def _start(name: str, exe: dict[str, Path], up_port: int, tmp: Path) -> tuple[Any, int]:
    if name == "gateway":
        return start_gateway(up_port, tmp)
    if name == "vllm-router":
        return start_vllm_router(exe[name], up_port, tmp)
    if name == "litellm":
        return start_litellm(exe[name], up_port, tmp)
    return None, up_port


def one_repeat(names: list[str], exe: dict[str, Path], up_port: int, tmp: Path,
               duration_s: float) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Every path at every rate, then its max sustained rate; one proxy process per figure."""
    runs: dict[str, dict[str, Any]] = {}
    for name in names:
        runs[name] = {}
        for rate in (*RATES_RPS, None):
            proc = None
            try:
                proc, port = _start(name, exe, up_port, tmp)
                warm_up(port, "/v1")
                if rate is None:
                    runs[name]["max_rps"] = sustained(port, "/v1", duration_s)
                else:
                    runs[name][f"at_{rate}_rps"] = measure(port, "/v1", rate, duration_s)
            except RuntimeError as exc:
                runs[name]["error"] = str(exc)
            finally:
                if proc is not None:
                    stop(proc)
            time.sleep(1.0)
    return runs


def _added(runs: dict[str, dict[str, Any]], name: str, rate: int, q: str) -> float | None:
    here, base = runs[name].get(f"at_{rate}_rps"), runs["direct"].get(f"at_{rate}_rps")
    if here is None or base is None or here["completed"] < 0.99 * here["sent"]:
        return None  # it did not sustain this rate
    return float(here[f"{q}_ms"] - base[f"{q}_ms"])


def _median(values: list[float | None]) -> float | None:
    """Median of the repeats; None unless every repeat sustained the rate."""
    if not values or any(v is None for v in values):
        return None
    return round(float(np.median([v for v in values if v is not None])), 3)


def summarize(repeats: list[dict[str, dict[str, Any]]], names: list[str]) -> dict[str, Any]:
    """Medians over repeats: added p50/p99 per path and rate, max sustained rate per path."""
    out: dict[str, Any] = {}
    for name in names:
        out[f"{name}_max_rps"] = _median([r[name].get("max_rps") for r in repeats])
        if name == "direct":
            continue
        for rate in RATES_RPS:
            for q in ("p50", "p99"):
                key = f"{name}_{q}_added_ms" + ("" if rate == 500 else f"_at_{rate}_rps")
                out[key] = _median([_added(r, name, rate, q) for r in repeats])
    gw, vr = (
        out.get("gateway_p99_added_ms_at_400_rps"),
        out.get("vllm-router_p99_added_ms_at_400_rps"),
    )
    out["gateway_vs_vllm_router_p99_added_at_400_rps"] = (
        round(gw / vr, 2) if gw is not None and vr is not None and vr > 0 else None
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--duration-s", type=float, default=5.0, help="seconds per rate")
    parser.add_argument("--repeats", type=int, default=3, help="runs of the whole set (median)")
    parser.add_argument("--no-vllm-router", action="store_true", help="skip vllm-router")
    parser.add_argument("--litellm", action="store_true", help="add LiteLLM's proxy")
    parser.add_argument("--venvs", type=Path, default=Path(tempfile.gettempdir()),
                        help="where the other proxies' venvs are made (reused)")  # fmt: skip
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="gw-overhead-"))
    up_port = free_port()
    upstream = subprocess.Popen([sys.executable, "-c", FAKE_SERVER, str(up_port), str(TOKENS)])
    result: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                   f"Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
        "command": "python " + " ".join(sys.argv),
        "tokens_per_answer": TOKENS,
        "duration_s_per_rate": args.duration_s,
        "repeats": args.repeats,
    }  # fmt: skip
    try:
        wait_http(up_port, "/health")
        exe: dict[str, Path] = {}
        for name, wanted, install in (
            ("vllm-router", not args.no_vllm_router, install_vllm_router),
            ("litellm", args.litellm, install_litellm),
        ):
            found = install(args.venvs / f"fairserve-{name}-venv") if wanted else None
            if found is not None:
                exe[name] = found
            elif wanted:
                result[f"{name}_error"] = "could not be installed"
        names = ["direct", "gateway", *exe]
        repeats = []
        for i in range(args.repeats):
            order = names[i % len(names) :] + names[: i % len(names)]  # drift spread over paths
            repeats.append(one_repeat(order, exe, up_port, tmp, args.duration_s))
            print(f"repeat {i + 1}/{args.repeats} done", file=sys.stderr)
        result["repeat_runs"] = repeats
        result.update(summarize(repeats, names))
    finally:
        stop(upstream)
        shutil.rmtree(tmp, ignore_errors=True)
    text = json.dumps(result) if args.json else json.dumps(result, indent=2)
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(text)


if __name__ == "__main__":
    main()
