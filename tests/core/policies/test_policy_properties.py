"""Property tests: any sequence of push/pop/remove (with service reports, finishes
and preemptions in between) conserves requests, and pop takes the minimum of
each policy's own order."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fairserve.core.model import Request, Tenant
from fairserve.core.policies import POLICIES, Policy
from fairserve.core.policies.fair import TenantFairPolicy
from fairserve.core.policies.ordered import KeyedPolicy
from fairserve.core.policies.uwfq import UwfqPolicy

TENANTS = ["a", "b", "c", "d"]
CONFIG = {
    "a": Tenant("a", weight=1.0),
    "b": Tenant("b", weight=2.0, priority=1),
    "c": Tenant("c", weight=0.5, priority=2),
}

push_op = st.tuples(
    st.just("push"),
    st.sampled_from(TENANTS),
    st.floats(0, 100, allow_nan=False),
    st.integers(1, 500),
    st.integers(1, 500),
    st.none() | st.integers(0, 500),
    st.integers(0, 3),
)
ops = st.lists(
    st.one_of(
        push_op,
        push_op,
        st.tuples(st.just("pop")),
        st.tuples(st.just("pop")),
        st.tuples(st.just("remove"), st.integers(0, 1000)),
        st.tuples(
            st.just("serve"), st.sampled_from(TENANTS), st.integers(0, 64), st.integers(0, 64)
        ),
        st.tuples(st.just("finish"), st.integers(0, 1000), st.integers(1, 600)),
        st.tuples(st.just("preempt"), st.integers(0, 1000)),
    ),
    max_size=80,
)


def rank_of(policy: Policy, req: Request) -> float | None:
    """The quantity the policy minimises at a pop, where it exposes one."""
    if isinstance(policy, KeyedPolicy):
        return policy.key(req)
    if isinstance(policy, TenantFairPolicy):
        return policy.counter(req.tenant)
    if isinstance(policy, UwfqPolicy):
        return policy.finish_tag(req)
    return None


@pytest.mark.parametrize("name", POLICIES.names())
@settings(max_examples=60, deadline=None)
@given(script=ops)
def test_requests_are_conserved_and_pop_takes_the_minimum(name: str, script: list[tuple]) -> None:
    policy = POLICIES.create(name, tenants=CONFIG)
    queued: list[Request] = []  # in push order
    running: list[Request] = []
    seen: list[Request] = []
    pushes: Counter[int] = Counter()
    exits: Counter[int] = Counter()
    now = 0.0

    def pop_one() -> None:
        head = policy.peek(now)
        # Ranks before the pop: a pop may charge the tenant it serves.
        ranks = {id(r): rank_of(policy, r) for r in queued}
        popped = policy.pop(now)
        assert popped is head
        if not queued:
            assert popped is None
            return
        assert popped is not None and popped in queued
        rank = ranks[id(popped)]
        if rank is not None:
            assert rank == min(e for e in ranks.values() if e is not None)
        queued.remove(popped)
        running.append(popped)
        exits[id(popped)] += 1

    for op in script:
        now += 0.5
        kind = op[0]
        if kind == "push":
            _, tenant, arrival, prompt, output, predicted, priority = op
            r = Request(
                len(seen),
                arrival,
                prompt,
                output,
                tenant=tenant,
                predicted_output_tokens=predicted,
                priority=priority,
            )
            seen.append(r)
            policy.push(r, now)
            queued.append(r)
            pushes[id(r)] += 1
        elif kind == "pop":
            pop_one()
        elif kind == "remove" and seen:
            r = seen[op[1] % len(seen)]
            was_queued = r in queued
            assert policy.remove(r) is was_queued
            if was_queued:
                queued.remove(r)
                exits[id(r)] += 1
        elif kind == "serve" and policy.charges:
            policy.on_served(op[1], op[2], op[3], now)
        elif kind == "finish" and running:
            r = running.pop(op[1] % len(running))
            policy.on_finish(r, op[2], now)
        elif kind == "preempt" and running:
            r = running[op[1] % len(running)]
            victim = policy.pick_victim(running, now)
            assert victim in running
            running.remove(r)
            policy.push(r, now)  # queued again, as an engine does after a preemption
            queued.append(r)
            pushes[id(r)] += 1
        assert len(policy) == len(queued)

    while queued:
        pop_one()
    assert len(policy) == 0 and policy.pop(now) is None and policy.peek(now) is None
    assert pushes == exits  # every push ended in exactly one pop or removal
