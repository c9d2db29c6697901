"""FleetCounters: policies whose counters several gateway replicas merge.

The merge here is the one the gateway's shared state makes (each replica's
change of each counter summed, lifts taken as a maximum), done in memory
after every step, so replicas that merge at once must order as one policy.
"""

from __future__ import annotations

import pytest

from fairserve.core.policies import POLICIES, FleetCounters
from fairserve.core.policies.uwfq import VIRTUAL_CLOCK, UwfqPolicy
from tests.core.policies.factories import req

TENANTS = ["heavy", "light"]


class Fleet:
    """Replicas of one policy and the fleet's counters, merged on demand."""

    def __init__(self, name: str, replicas: int, **params: object) -> None:
        self.replicas = [POLICIES.create(name, **params) for _ in range(replicas)]
        assert all(isinstance(p, FleetCounters) for p in self.replicas)
        self.fleet: dict[str, float] = {}
        self.synced: list[dict[str, float]] = [{} for _ in self.replicas]
        self.lifted: list[dict[str, float]] = [{} for _ in self.replicas]

    def merge(self, i: int) -> None:
        """Replica ``i`` sends its changes since its last merge and takes the fleet's."""
        policy = self.replicas[i]
        assert isinstance(policy, FleetCounters)
        for name in policy.counter_names(TENANTS):
            full = policy.counter(name)
            lift = policy.lifted.get(name, 0.0) - self.lifted[i].get(name, 0.0)
            if name in self.fleet:
                value = self.fleet[name] + full - self.synced[i].get(name, 0.0) - lift
                if lift > 0:
                    value = max(value, full)
            else:
                value = full
            self.fleet[name] = value
            policy.add_to_counter(name, value - full)
            self.synced[i][name] = value
            self.lifted[i][name] = policy.lifted.get(name, 0.0)

    def merge_all(self) -> None:
        for _ in range(2):  # every replica sees every change: two rounds
            for i in range(len(self.replicas)):
                self.merge(i)


@pytest.mark.parametrize("name", POLICIES.names())
def test_policies_with_counters_say_so(name: str) -> None:
    fair = {"vtc", "wrr", "fair-sjf", "uwfq"}
    assert isinstance(POLICIES.create(name), FleetCounters) == (name in fair)


def test_uwfq_replicas_merging_at_once_tag_as_one_policy() -> None:
    """A flood spread over two replicas pushes its tenant's tags as far as on one."""
    one = UwfqPolicy(output_weight=1.0)
    fleet = Fleet("uwfq", 2, output_weight=1.0)
    sizes = [9, 19, 4, 29, 9, 14]
    heavy = [req(i, 0.0, prompt=1, tenant="heavy", predicted=s) for i, s in enumerate(sizes)]
    tags_one, tags_fleet = [], []
    for i, r in enumerate(heavy):
        one.push(r, 0.0)
        tags_one.append(one.fleet_rank(r))
        replica = fleet.replicas[i % 2]
        replica.push(r, 0.0)
        tags_fleet.append(replica.fleet_rank(r))  # type: ignore[attr-defined]
        fleet.merge_all()
    assert tags_fleet == tags_one
    # Service on one replica moves the clock of both: a tenant arriving on the
    # other starts where it would on one policy.
    for policy in (one, fleet.replicas[0]):
        assert policy.pop(0.0) is heavy[0]
        policy.on_served("heavy", 1, 9, 1.0)
        policy.on_finish(heavy[0], 9, 1.0)
    fleet.merge_all()
    assert fleet.replicas[1].counter(VIRTUAL_CLOCK) == one.virtual_time > 0  # type: ignore[attr-defined]
    light_one = req(100, 1.0, prompt=1, tenant="light", predicted=3)
    light_fleet = req(101, 1.0, prompt=1, tenant="light", predicted=3)
    one.push(light_one, 1.0)
    fleet.replicas[1].push(light_fleet, 1.0)
    assert fleet.replicas[1].fleet_rank(light_fleet) == one.fleet_rank(light_one)  # type: ignore[attr-defined]
    # ... and ahead of the flood's queued requests on either replica
    assert one.peek(1.0) is light_one
    assert fleet.replicas[1].peek(1.0) is light_fleet


def test_uwfq_unmerged_replicas_let_a_spread_flood_jump_ahead() -> None:
    """Why merge: without it, each replica tags the flood as if it were alone."""
    fleet = Fleet("uwfq", 2, output_weight=1.0)
    for i in range(6):
        fleet.replicas[i % 2].push(req(i, 0.0, prompt=1, tenant="heavy", predicted=9), 0.0)
    last = fleet.replicas[1]
    assert last.counter("heavy") == 30  # type: ignore[attr-defined]
    fleet.merge_all()
    assert last.counter("heavy") == 60  # type: ignore[attr-defined]


def test_uwfq_a_clock_lift_is_merged_once() -> None:
    """Two replicas lifting one idle tenant to the clock lift it once, not twice."""
    fleet = Fleet("uwfq", 2, output_weight=1.0)
    first, second = fleet.replicas
    first.push(req(1, 0.0, prompt=1, tenant="heavy", predicted=99), 0.0)
    assert first.pop(0.0) is not None
    first.on_served("heavy", 1, 99, 1.0)  # alone: the clock moves 100
    fleet.merge_all()
    for i, policy in enumerate(fleet.replicas):  # light arrives on both, idle until now
        policy.push(req(10 + i, 1.0, prompt=1, tenant="light", predicted=9), 1.0)
    assert first.lifted["light"] == second.lifted["light"] == 100  # type: ignore[attr-defined]
    fleet.merge_all()
    # the lift once (100), then both requests' 10 each
    assert first.counter("light") == second.counter("light") == 120  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", ["vtc", "wrr", "fair-sjf"])
def test_fair_queue_rank_is_the_counter_after_the_dispatch_charge(name: str) -> None:
    policy = POLICIES.create(name)
    assert isinstance(policy, FleetCounters)
    r = req(1, 0.0, prompt=40, tenant="heavy", predicted=5)
    policy.push(r, 0.0)
    rank = policy.fleet_rank(r)
    assert policy.pop(0.0) is r
    assert policy.counter("heavy") == rank > 0
