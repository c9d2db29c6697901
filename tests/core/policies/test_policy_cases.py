"""Hand-worked cases: the exact order of service and the victim of every policy."""

from __future__ import annotations

import pytest

from fairserve.core.model import SLO, Tenant
from fairserve.core.policies import POLICIES, Policy
from fairserve.core.policies.fair import FairSjfPolicy, VtcPolicy, WrrPolicy
from fairserve.core.policies.ordered import AgingPolicy, PriorityPolicy
from fairserve.core.policies.uwfq import UwfqPolicy
from tests.core.policies.factories import drain, push_all, req

EXPECTED_NAMES = {
    "fifo",
    "priority",
    "wrr",
    "sjf",
    "aging",
    "edf",
    "vtc",
    "uwfq",
    "oracle-sjf",
    "oracle-srpt",
    "fair-sjf",
}


def test_every_policy_is_registered() -> None:
    assert set(POLICIES.names()) >= EXPECTED_NAMES


@pytest.mark.parametrize("name", POLICIES.names())
def test_every_policy_builds_with_defaults_and_follows_the_protocol(name: str) -> None:
    policy = POLICIES.create(name)
    assert isinstance(policy, Policy)
    assert isinstance(policy.charges, bool)
    assert len(policy) == 0 and policy.pop(0.0) is None and policy.peek(0.0) is None
    policy_with_tenants = POLICIES.create(name, tenants={"a": Tenant("a", weight=2.0)})
    assert isinstance(policy_with_tenants, Policy)


@pytest.mark.parametrize(
    ("name", "params", "bad"),
    [
        ("priority", {"level": "class"}, "level"),
        ("aging", {"rate_per_s": -1.0}, "rate_per_s"),
        ("aging", {"rate_per_s": "fast"}, "rate_per_s"),
        ("sjf", {"default_output_tokens": 0}, "default_output_tokens"),
        ("sjf", {"prompt_weight": float("nan")}, "prompt_weight"),
        ("sjf", {"max_wait_s": 0}, "max_wait_s"),
        ("sjf", {"aging_tokens_per_s": -1}, "aging_tokens_per_s"),
        ("edf", {"default_horizon_s": 0.0}, "default_horizon_s"),
        ("vtc", {"charge": "later"}, "charge"),
        ("vtc", {"output_weight": -2}, "output_weight"),
        ("vtc", {"default_output_tokens": 1.5}, "default_output_tokens"),
        ("fair-sjf", {"input_weight": True}, "input_weight"),
        ("uwfq", {"input_weight": -1}, "input_weight"),
        ("oracle-srpt", {"prompt_weight": -0.5}, "prompt_weight"),
    ],
)
def test_bad_parameters_name_the_parameter(name: str, params: dict[str, object], bad: str) -> None:
    with pytest.raises(ValueError, match=bad):
        POLICIES.create(name, **params)


@pytest.mark.parametrize("name", POLICIES.names())
def test_pushing_a_queued_request_twice_is_a_bug(name: str) -> None:
    policy = POLICIES.create(name)
    r = req(1)
    policy.push(r, 0.0)
    with pytest.raises(ValueError, match="already queued"):
        policy.push(r, 0.0)
    with pytest.raises(ValueError, match="already queued"):
        policy.requeue(r, 0.0)


@pytest.mark.parametrize("name", POLICIES.names())
def test_requeued_requests_go_first_the_latest_first(name: str) -> None:
    tenants = {"A": Tenant("A"), "B": Tenant("B", weight=2.0)}
    policy = POLICIES.create(name, tenants=tenants)
    reqs = [req(i, float(i), tenant="AB"[i % 2], predicted=10 * (5 - i)) for i in range(4)]
    push_all(policy, reqs[:2])
    first, second = policy.pop(1.0), policy.pop(1.0)
    assert first is not None and second is not None
    push_all(policy, reqs[2:])
    head = policy.peek(2.0)
    # Preempted in this order: the last one requeued is served first.
    policy.requeue(first, 3.0)
    policy.requeue(second, 3.0)
    assert len(policy) == 4
    with pytest.raises(ValueError, match="already queued"):
        policy.requeue(second, 3.0)
    assert policy.peek(3.0) is second and policy.pop(3.0) is second
    assert policy.pop(3.0) is first
    # The requests still waiting keep the order they had.
    assert policy.peek(3.0) is head
    assert sorted(drain(policy, 3.0)) == [2, 3]


@pytest.mark.parametrize("name", POLICIES.names())
def test_a_requeued_request_can_be_removed(name: str) -> None:
    policy = POLICIES.create(name)
    a, b = req(1), req(2, 1.0)
    push_all(policy, [a, b])
    popped = policy.pop(1.0)
    assert popped is a
    policy.requeue(a, 2.0)
    assert policy.remove(a) and not policy.remove(a)
    assert len(policy) == 1 and drain(policy) == [2]


# ---------------------------------------------------------------- priority, aging


def test_priority_serves_urgent_levels_first_fifo_within_a_level() -> None:
    policy = POLICIES.create("priority")
    push_all(
        policy,
        [
            req(1, 0.0, priority=1),
            req(2, 1.0, priority=0),
            req(3, 2.0, priority=1),
            req(4, 3.0, priority=0),
        ],
    )
    assert drain(policy) == [2, 4, 1, 3]


def test_priority_victim_is_least_urgent_then_latest_arrival() -> None:
    policy = POLICIES.create("priority")
    running = [req(1, 0.0, priority=1), req(2, 5.0, priority=0), req(3, 2.0, priority=1)]
    assert policy.pick_victim(running, 9.0).id == 3
    running = [req(1, 3.0, priority=1), req(2, 5.0, priority=0), req(3, 2.0, priority=1)]
    assert policy.pick_victim(running, 9.0).id == 1
    # Equal level and arrival: the latest admitted.
    running = [req(1, 1.0, priority=1), req(2, 1.0, priority=1)]
    assert policy.pick_victim(running, 9.0).id == 2


def test_priority_level_from_the_tenant() -> None:
    tenants = {"hi": Tenant("hi", priority=0), "lo": Tenant("lo", priority=2)}
    policy = PriorityPolicy(tenants, level="tenant")
    push_all(policy, [req(1, 0.0, tenant="lo", priority=0), req(2, 1.0, tenant="hi", priority=5)])
    assert drain(policy) == [2, 1]


def test_aging_orders_by_level_plus_rate_times_arrival() -> None:
    # rate 0.5 level/s: keys 2.0, 1.5, 2.5, 1.5 -> d (tie with b, earlier arrival), b, a, c.
    policy = AgingPolicy(rate_per_s=0.5)
    push_all(
        policy,
        [
            req(1, 0.0, priority=2),  # a
            req(2, 3.0, priority=0),  # b
            req(3, 5.0, priority=0),  # c
            req(4, 1.0, priority=1),  # d
        ],
    )
    # The order is the same whenever one looks: aging is time-invariant.
    assert policy.peek(0.0) is policy.peek(1e6)
    assert drain(policy, now=5.0) == [4, 2, 1, 3]


def test_aging_with_rate_zero_is_strict_priority() -> None:
    policy = AgingPolicy(rate_per_s=0.0)
    push_all(policy, [req(1, 0.0, priority=2), req(2, 100.0, priority=0)])
    assert drain(policy) == [2, 1]


def test_aging_victim_is_the_least_urgent_after_aging() -> None:
    policy = AgingPolicy(rate_per_s=1.0)
    # keys: 1 + 0 = 1, 0 + 3 = 3: the level-0 request arrived 3 s later and is less urgent.
    running = [req(1, 0.0, priority=1), req(2, 3.0, priority=0)]
    assert policy.pick_victim(running, 4.0).id == 2


# ---------------------------------------------------------------- sjf, oracles


def test_sjf_on_predicted_tokens_with_default_and_fifo_ties() -> None:
    policy = POLICIES.create("sjf", default_output_tokens=50)
    push_all(
        policy,
        [
            req(1, 0.0, output=1, predicted=100),
            req(2, 1.0, output=1, predicted=None),  # the default: 50
            req(3, 2.0, output=900, predicted=10),
            req(4, 3.0, output=1, predicted=50),
        ],
    )
    assert drain(policy) == [3, 2, 4, 1]


def test_sjf_prompt_weight_counts_prompts() -> None:
    policy = POLICIES.create("sjf", prompt_weight=1.0)
    push_all(policy, [req(1, 0.0, prompt=500, predicted=10), req(2, 1.0, prompt=10, predicted=100)])
    assert drain(policy) == [2, 1]


def test_sjf_victim_is_the_most_recently_admitted() -> None:
    # Not the longest: preempting it again and again would starve it (tests/core/policies/
    # test_starvation.py).
    policy = POLICIES.create("sjf")
    running = [req(1, 0.0, predicted=30), req(2, 1.0, predicted=300), req(3, 2.0, predicted=3)]
    assert policy.pick_victim(running, 5.0).id == 3


def test_oracles_use_true_lengths() -> None:
    reqs = [
        req(1, 0.0, prompt=100, output=10, predicted=1),
        req(2, 1.0, prompt=5, output=50, predicted=1),
        req(3, 2.0, prompt=1, output=60, predicted=1),
    ]
    sjf = POLICIES.create("oracle-sjf")
    push_all(sjf, reqs)
    assert drain(sjf) == [1, 2, 3]
    srpt = POLICIES.create("oracle-srpt")
    push_all(srpt, reqs)
    assert drain(srpt) == [2, 3, 1]  # remaining work 55, 61, 110
    assert srpt.pick_victim(reqs, 3.0).id == 1
    assert sjf.pick_victim(reqs, 3.0).id == 3


# ---------------------------------------------------------------- edf


def test_edf_deadlines_from_e2e_then_ttft_then_default() -> None:
    tenants = {
        "chat": Tenant("chat", slo=SLO("chat", ttft_s=1.0, e2e_s=10.0)),
        "fast": Tenant("fast", slo=SLO("fast", ttft_s=2.0)),
    }
    policy = POLICIES.create("edf", tenants=tenants, default_horizon_s=100.0)
    a = req(1, 0.0, tenant="batch")  # due at 100
    b = req(2, 1.0, tenant="chat")  # due at 11
    c = req(3, 5.0, tenant="fast")  # due at 7
    d = req(4, 2.0, tenant="chat")  # due at 12
    push_all(policy, [a, b, c, d])
    assert policy.pick_victim([a, b, c], 5.0).id == 1
    assert drain(policy) == [3, 2, 4, 1]


# ---------------------------------------------------------------- wrr


def test_wrr_interleaves_tenants_by_weight() -> None:
    policy = WrrPolicy({"A": Tenant("A", weight=2.0), "B": Tenant("B", weight=1.0)})
    a = [req(i, 0.0, tenant="A") for i in range(1, 7)]
    b = [req(10 + i, 0.0, tenant="B") for i in range(1, 4)]
    push_all(policy, a + b)
    # Passes: A advances by 1/2, B by 1; lowest pass first, ties to A (seen first).
    assert drain(policy) == [1, 11, 2, 3, 12, 4, 5, 13, 6]


def test_wrr_returning_tenant_rejoins_at_the_current_pass() -> None:
    policy = WrrPolicy()
    push_all(policy, [req(i, 0.0, tenant="A") for i in range(1, 5)])
    assert [policy.pop(0.0).id for _ in range(3)] == [1, 2, 3]  # type: ignore[union-attr]
    push_all(policy, [req(11, 1.0, tenant="B"), req(12, 1.0, tenant="B")])
    # B is lifted to A's pass (3): it does not get the three turns it missed.
    assert policy.counter("B") == 3.0
    assert drain(policy) == [4, 11, 12]


def test_wrr_lift_when_nobody_is_backlogged_uses_the_last_to_leave() -> None:
    policy = WrrPolicy()
    policy.push(req(1, 0.0, tenant="A"), 0.0)
    policy.push(req(2, 0.0, tenant="A"), 0.0)
    drain(policy)
    policy.push(req(3, 1.0, tenant="B"), 1.0)
    assert policy.counter("B") == 2.0


def test_wrr_remove_keeps_invariants() -> None:
    policy = WrrPolicy()
    a1, a2, b1 = req(1, tenant="A"), req(2, tenant="A"), req(3, tenant="B")
    push_all(policy, [a1, a2, b1])
    assert policy.remove(a1) and not policy.remove(a1)
    assert policy.remove(a2)
    assert len(policy) == 1 and drain(policy) == [3]


# ---------------------------------------------------------------- vtc


def test_vtc_served_mode_counters_and_order() -> None:
    policy = VtcPolicy()
    a1 = req(1, 0.0, prompt=10, tenant="A")
    a2 = req(2, 0.0, prompt=10, tenant="A")
    b1 = req(3, 0.0, prompt=30, tenant="B")
    b2 = req(4, 0.0, prompt=10, tenant="B")
    push_all(policy, [a1, a2, b1, b2])
    assert policy.charges
    assert policy.pop(0.0) is a1  # tie at 0: A was seen first; A = 10
    assert policy.pop(0.0) is b1  # B = 30
    # The prompt was charged at dispatch: reporting its prefill adds nothing ...
    policy.on_served("A", 10, 0, 1.0)
    assert policy.counter("A") == 10.0
    # ... prefill beyond it (a recompute) and output tokens (weight 2) do.
    policy.on_served("A", 5, 10, 1.0)
    assert policy.counter("A") == 10.0 + 5 + 20
    assert policy.peek(1.0) is b2  # B (30) is now below A (35)
    assert policy.pop(1.0) is b2 and policy.counter("B") == 40.0
    assert policy.pop(1.0) is a2 and policy.counter("A") == 45.0


def test_vtc_weights_divide_the_charge() -> None:
    policy = VtcPolicy({"A": Tenant("A", weight=2.0)})
    push_all(policy, [req(1, prompt=10, tenant="A"), req(2, prompt=10, tenant="B")])
    drain(policy)
    policy.on_served("A", 0, 10, 1.0)
    policy.on_served("B", 0, 10, 1.0)
    assert policy.counter("A") == (10 + 20) / 2
    assert policy.counter("B") == 10 + 20


def test_vtc_admission_mode_charges_prediction_and_reconciles() -> None:
    policy = VtcPolicy(charge="admission", default_output_tokens=7)
    assert not policy.charges  # no per-step reports needed
    a = req(1, prompt=10, output=8, tenant="A", predicted=5)
    b = req(2, prompt=10, output=8, tenant="B")
    push_all(policy, [a, b])
    assert policy.pop(0.0) is a and policy.counter("A") == 10 + 2 * 5
    assert policy.pop(0.0) is b and policy.counter("B") == 10 + 2 * 7
    policy.on_served("A", 0, 100, 1.0)  # ignored in admission mode
    assert policy.counter("A") == 20
    # Preempted and queued again: A rejoins the backlog lifted to B's counter (24, B
    # left last); dispatched again, the prompt is recomputed, the output not charged twice.
    policy.push(a, 1.0)
    assert policy.counter("A") == 24
    assert policy.pop(1.0) is a and policy.counter("A") == 34
    policy.on_finish(a, 8, 2.0)
    assert policy.counter("A") == 34 + 2 * (8 - 5)
    policy.on_finish(a, 8, 2.0)  # a second report changes nothing
    assert policy.counter("A") == 40


def test_vtc_returning_tenant_is_lifted_to_the_lowest_backlogged_counter() -> None:
    policy = VtcPolicy()
    push_all(policy, [req(i, prompt=100, tenant="A") for i in range(3)])
    push_all(policy, [req(10 + i, prompt=50, tenant="C") for i in range(3)])
    policy.pop(0.0)  # A = 100
    policy.pop(0.0)  # C = 50
    policy.pop(0.0)  # C = 100
    policy.on_served("B", 0, 5, 0.0)  # B ran earlier work: B = 10
    policy.push(req(20, prompt=1, tenant="B"), 1.0)
    assert policy.counter("B") == 100.0  # min(A=100, C=100)
    policy2 = VtcPolicy()
    policy2.on_served("B", 0, 500, 0.0)  # B = 1000, above everybody
    policy2.push(req(1, tenant="A"), 0.0)
    policy2.push(req(2, tenant="B"), 0.0)
    assert policy2.counter("B") == 1000.0  # never lowered


def test_vtc_victim_is_from_the_tenant_furthest_ahead() -> None:
    policy = VtcPolicy()
    policy.on_served("A", 0, 100, 0.0)
    policy.on_served("B", 0, 10, 0.0)
    running = [req(1, 0.0, tenant="A"), req(2, 1.0, tenant="B"), req(3, 0.5, tenant="A")]
    assert policy.pick_victim(running, 2.0).id == 3


def test_fair_sjf_shortest_within_the_fair_tenant() -> None:
    policy = FairSjfPolicy()
    a1 = req(1, 0.0, prompt=10, tenant="A", predicted=100)
    a2 = req(2, 1.0, prompt=10, tenant="A", predicted=10)
    b1 = req(3, 0.5, prompt=10, tenant="B", predicted=50)
    push_all(policy, [a1, a2, b1])
    assert drain(policy) == [2, 3, 1]
    running = [a1, a2, b1]
    assert policy.pick_victim(running, 2.0).id == 1  # A: 20 > B: 10, its longest


# ---------------------------------------------------------------- uwfq


def test_uwfq_serves_smallest_virtual_finish_time() -> None:
    policy = UwfqPolicy(output_weight=1.0)
    a1 = req(1, 0.0, prompt=1, tenant="A", predicted=9)  # F = 10
    a2 = req(2, 0.1, prompt=1, tenant="A", predicted=9)  # F = 20
    b1 = req(3, 0.2, prompt=1, tenant="B", predicted=3)  # F = 4
    b2 = req(4, 0.3, prompt=1, tenant="B", predicted=29)  # F = 34
    push_all(policy, [a1, a2, b1, b2])
    assert [policy.finish_tag(r) for r in (a1, a2, b1, b2)] == [10, 20, 4, 34]
    assert drain(policy) == [3, 1, 2, 4]


def test_uwfq_weights_stretch_virtual_time() -> None:
    policy = UwfqPolicy({"B": Tenant("B", weight=2.0)}, output_weight=1.0)
    a1 = req(1, 0.0, prompt=1, tenant="A", predicted=9)  # F = 10
    a2 = req(2, 0.1, prompt=1, tenant="A", predicted=9)  # F = 20
    b1 = req(3, 0.2, prompt=1, tenant="B", predicted=3)  # F = 2
    b2 = req(4, 0.3, prompt=1, tenant="B", predicted=29)  # F = 2 + 15 = 17
    push_all(policy, [a1, a2, b1, b2])
    assert drain(policy) == [3, 1, 4, 2]


def test_uwfq_virtual_time_overrun_and_refund() -> None:
    policy = UwfqPolicy(output_weight=1.0)
    a1 = req(1, 0.0, prompt=1, output=29, tenant="A", predicted=9)  # F = 10
    b1 = req(2, 0.0, prompt=1, output=1, tenant="B", predicted=3)  # F = 4
    push_all(policy, [a1, b1])
    assert policy.pop(0.0) is b1 and policy.pop(0.0) is a1
    # Two active tenants of weight 1: V advances by half the service.
    policy.on_served("A", 1, 9, 1.0)
    assert policy.virtual_time == 5.0
    # A new tenant starts at V.
    c = req(3, 1.0, prompt=1, tenant="C", predicted=1)
    policy.push(c, 1.0)
    assert policy.finish_tag(c) == 5.0 + 2
    # A runs 20 tokens past its prediction: its next request starts 20 later.
    policy.on_served("A", 0, 20, 2.0)
    policy.on_finish(a1, 29, 2.0)
    a2 = req(4, 2.0, prompt=1, tenant="A", predicted=9)
    policy.push(a2, 2.0)
    assert policy.finish_tag(a2) == 10 + 20 + 10
    # B used 2 of its predicted 4: the unused 2 is refunded to its virtual time.
    policy.on_served("B", 1, 1, 2.0)
    policy.on_finish(b1, 1, 2.0)
    b2 = req(5, 2.0, prompt=1, tenant="B", predicted=1)
    policy.push(b2, 2.0)
    v = policy.virtual_time
    # (approx: a tag is kept relative to the tenant's offset, which rounds.)
    assert policy.finish_tag(b2) == pytest.approx(max(v, 4 - 2) + 2, rel=1e-12)


def test_uwfq_retags_queued_requests_when_a_tenant_overruns() -> None:
    # A burst of A's requests, predicted small (tags 2, 4, 6), queued beside B's
    # (tags 3, 6, 9): in predicted order they interleave.
    policy = UwfqPolicy(output_weight=1.0)
    a = [req(i, 0.0, prompt=1, output=100, tenant="A", predicted=1) for i in range(3)]
    b = [req(10 + i, 0.0, prompt=1, tenant="B", predicted=2) for i in range(3)]
    push_all(policy, [*a, *b])
    assert policy.pop(0.0) is a[0]
    # A's first request runs 50 tokens past its 2 predicted: every queued tag of A
    # moves 50 later at once, not only A's next arrival's.
    before = [policy.finish_tag(r) for r in a[1:]]
    policy.on_served("A", 1, 51, 1.0)
    after = [policy.finish_tag(r) for r in a[1:]]
    assert after == pytest.approx([t + 50 for t in before])  # type: ignore[operator]
    assert drain(policy) == [10, 11, 12, 1, 2]


def test_uwfq_preempted_request_keeps_its_tag_and_victim_is_latest_tag() -> None:
    policy = UwfqPolicy(output_weight=1.0)
    a = req(1, 0.0, prompt=1, tenant="A", predicted=9)  # F = 10
    b = req(2, 0.0, prompt=1, tenant="B", predicted=3)  # F = 4
    push_all(policy, [a, b])
    assert drain(policy) == [2, 1]
    assert policy.pick_victim([a, b], 1.0) is a
    policy.push(a, 1.0)
    assert policy.finish_tag(a) == 10 and len(policy) == 1
    c = req(3, 1.0, prompt=1, tenant="C", predicted=20)  # F = 21
    policy.push(c, 1.0)
    assert drain(policy) == [1, 3]


def test_uwfq_remove_forgets_the_request() -> None:
    policy = UwfqPolicy()
    a, b = req(1, tenant="A"), req(2, tenant="A")
    push_all(policy, [a, b])
    assert policy.remove(a) and not policy.remove(a)
    assert policy.finish_tag(a) is None
    assert drain(policy) == [2]


@pytest.mark.parametrize("name", POLICIES.names())
def test_victim_of_an_empty_batch_is_an_error(name: str) -> None:
    policy = POLICIES.create(name)
    with pytest.raises(ValueError):
        policy.pick_victim([], 0.0)
