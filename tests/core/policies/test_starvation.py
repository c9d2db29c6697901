"""SJF's starvation bound: a long job behind an endless stream of short ones is served."""

from __future__ import annotations

from fairserve.core.policies import POLICIES, Policy
from tests.core.policies.factories import req


def _served_at(policy: Policy, horizon_s: float) -> dict[int, float]:
    """A long job (id 0) at t=0, then a short one every 0.5 s; one request served per second.

    Twice as many arrive as are served, so the queue never empties of short jobs.
    """
    policy.push(req(0, 0.0, predicted=1000), 0.0)
    served: dict[int, float] = {}
    rid, t = 1, 0.0
    while t < horizon_s:
        for _ in range(2):
            policy.push(req(rid, t, predicted=10), t)
            rid += 1
        t += 1.0
        head = policy.peek(t)
        popped = policy.pop(t)
        assert popped is head and popped is not None
        served[popped.id] = t
    return served


def test_plain_sjf_starves_the_long_job() -> None:
    served = _served_at(POLICIES.create("sjf", max_wait_s=None), 200.0)
    assert 0 not in served


def test_the_default_wait_cap_serves_it_on_time() -> None:
    served = _served_at(POLICIES.create("sjf"), 200.0)  # max_wait_s 30 by default
    # Served at the first pop after it has waited 30 s. (In this overload every
    # wait then grows without bound, as it must: the queue grows by one a second.)
    assert served[0] == 30.0


def test_a_wait_cap_bounds_every_wait_while_the_server_keeps_up() -> None:
    # One arrival per second (a short job), one service per second: nobody is
    # overdue for long, and the long job goes after max_wait_s.
    policy = POLICIES.create("sjf", max_wait_s=5.0)
    policy.push(req(0, 0.0, predicted=1000), 0.0)
    order = []
    for step in range(1, 12):
        t = float(step)
        policy.push(req(step, t - 0.5, predicted=10), t - 0.5)
        popped = policy.pop(t)
        assert popped is not None
        order.append((popped.id, t))
    assert (0, 5.0) in order


def test_aging_on_predicted_work_serves_it_in_bounded_time() -> None:
    # 10 tokens/s: the long job (1000 tokens) is overtaken only by short jobs
    # arriving within (1000 - 10) / 10 = 99 s of it.
    policy = POLICIES.create("sjf", max_wait_s=None, aging_tokens_per_s=10.0)
    served = _served_at(policy, 400.0)
    assert 0 in served
    assert served[0] <= 99.0 + 200.0  # the jobs that arrived before 99 s, two per second


def test_removed_requests_do_not_trip_the_wait_cap() -> None:
    policy = POLICIES.create("sjf", max_wait_s=1.0)
    old, new = req(1, 0.0, predicted=5), req(2, 5.0, predicted=50)
    policy.push(old, 0.0)
    policy.push(new, 5.0)
    assert policy.remove(old)
    assert policy.peek(10.0) is new and policy.pop(10.0) is new
    assert policy.pop(10.0) is None
