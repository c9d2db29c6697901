"""The learned-rank policy in the live gateway: loaded from a saved ranker, it orders the queue.

One simulated engine over loopback, one request at a time (``max_concurrency``
1): a long streamed request holds the engine while three more queue, and the
ranker (shortest prompt first: no predictor, so the prompt decides) must
serve them by prompt length, not in arrival order as FIFO would.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from fairserve.core.policies.learned_rank import LearnedRankPolicy, RankModel
from fairserve.gateway.app import Gateway
from fairserve.store import save_ranker
from tests.gateway.helpers import KEY_A, MODEL, ended_total, gateway_config, gateway_thread
from tests.gateway.servers import engine_thread
from tests.helpers import wait_until

HEADERS = {"authorization": f"Bearer {KEY_A}"}
SHORTEST_PROMPT_FIRST = RankModel({"log_prompt": 1.0})


def _body(words: int, max_tokens: int, stream: bool = False) -> dict[str, object]:
    content = " ".join(["word"] * words)
    return {"model": MODEL, "messages": [{"role": "user", "content": content}],
            "max_tokens": max_tokens, "stream": stream}  # fmt: skip


def _queued(state: Gateway, n: int) -> Callable[[], bool]:
    return lambda: bool(state.scheduler.queued == n)


def test_the_gateway_serves_the_queue_in_the_rankers_order(tmp_path: Path) -> None:
    path = save_ranker(SHORTEST_PROMPT_FIRST, tmp_path / "ranker.json")
    with engine_thread() as engine:
        config = gateway_config(
            [engine.url],
            policy=f"learned-rank:path={path}",
            backends=[{"url": engine.url, "max_concurrency": 1}],
        )
        with gateway_thread(config) as (server, state), httpx.Client(timeout=30) as client:
            assert isinstance(state.policy, LearnedRankPolicy)
            assert state.policy.model == SHORTEST_PROMPT_FIRST
            done: list[str] = []
            lock = threading.Lock()

            def send(name: str, words: int) -> None:
                reply = httpx.post(server.url + "/v1/chat/completions", headers=HEADERS,
                                   json=_body(words, 4), timeout=30)  # fmt: skip
                assert reply.status_code == 200, reply.text
                with lock:
                    done.append(name)

            url = server.url + "/v1/chat/completions"
            with client.stream("POST", url, json=_body(3, 600, stream=True),
                               headers=HEADERS) as first:  # fmt: skip
                lines = first.iter_lines()  # keep it: a dropped iterator closes the stream
                assert next(lines).startswith("data: ")
                threads = []
                # Arrival order long, short, medium; each queued before the next is sent.
                for name, words in (("long", 60), ("short", 2), ("medium", 20)):
                    thread = threading.Thread(target=send, args=(name, words))
                    thread.start()
                    threads.append(thread)
                    assert wait_until(_queued(state, len(threads)))
                    time.sleep(0.01)  # distinct arrival times
                for _ in lines:  # let the first request finish: the queue drains one by one
                    pass
            for thread in threads:
                thread.join(timeout=30)
            assert done == ["short", "medium", "long"]
            assert wait_until(lambda: state.admitted == ended_total(state) == 4)
            assert state.outcomes["completed"] == 4
