"""Routers on tiny hand-built instance views."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from fairserve.core.model import Request
from fairserve.core.route import ROUTERS


@dataclass
class View:
    index: int
    outstanding_tokens: int = 0
    predicted_tokens: int = 0
    num_waiting: int = 0
    num_running: int = 0


def req(hashes: tuple[int, ...] | None = None) -> Request:
    return Request(0, 0.0, 100, 10, prefix_hashes=hashes)


def test_round_robin_cycles_and_skips_instances_without_room() -> None:
    router = ROUTERS.create("round-robin")
    views = [View(0), View(1), View(2)]
    picks = [views[router.choose(req(), views, 0.0)].index for _ in range(4)]
    assert picks == [0, 1, 2, 0]
    # Instance 1 has no room: the next after 0 is 2.
    assert [views[0], views[2]][router.choose(req(), [views[0], views[2]], 0.0)].index == 2


def test_least_tokens_takes_the_least_loaded_lowest_index_on_ties() -> None:
    router = ROUTERS.create("least-tokens")
    views = [View(0, 500), View(1, 200), View(2, 200)]
    assert router.choose(req(), views, 0.0) == 1


def test_predicted_load_reads_predicted_work() -> None:
    router = ROUTERS.create("predicted-load")
    views = [View(0, outstanding_tokens=10, predicted_tokens=900), View(1, 900, 100)]
    assert router.choose(req(), views, 0.0) == 1


def test_p2c_takes_the_less_loaded_of_two_and_is_seeded() -> None:
    views = [View(i, outstanding_tokens=100 * i) for i in range(8)]
    a = [ROUTERS.create("p2c", seed=5).choose(req(), views, 0.0) for _ in range(1)]
    router_a, router_b = ROUTERS.create("p2c", seed=5), ROUTERS.create("p2c", seed=5)
    seq_a = [router_a.choose(req(), views, 0.0) for _ in range(50)]
    seq_b = [router_b.choose(req(), views, 0.0) for _ in range(50)]
    assert seq_a == seq_b and a[0] == seq_a[0]
    # Never the most loaded instance: it loses every pairing.
    assert 7 not in seq_a
    # Two distinct instances are sampled, so the least loaded is picked often.
    assert seq_a.count(0) >= 5


def test_prefix_affinity_sends_a_shared_prefix_to_the_same_home() -> None:
    router = ROUTERS.create("prefix-affinity")
    views = [View(i) for i in range(6)]
    homes = {router.choose(req((42, 7, 8, 9, i)), views, 0.0) for i in range(20)}
    assert len(homes) == 1  # same first 4 blocks: the same (less loaded of two) home
    others = {router.choose(req((1000 + i,)), views, 0.0) for i in range(50)}
    assert len(others) >= 4  # different prefixes spread over the instances


def test_prefix_affinity_picks_the_less_loaded_of_its_two_homes() -> None:
    router = ROUTERS.create("prefix-affinity")
    views = [View(i) for i in range(6)]
    first = router.choose(req((9,)), views, 0.0)
    views[first].outstanding_tokens = 5000  # still within the guard (2 x 0 + 8192)
    second = router.choose(req((9,)), views, 0.0)
    assert second != first
    views[second].outstanding_tokens = 6000
    assert router.choose(req((9,)), views, 0.0) == first  # back to the less loaded home


def test_prefix_affinity_load_guard_falls_back_to_the_least_loaded() -> None:
    router = ROUTERS.create("prefix-affinity", imbalance=2.0, slack_tokens=100)
    views = [View(i, outstanding_tokens=1000) for i in range(6)]
    home = router.choose(req((3,)), views, 0.0)
    for v in views:
        if v.index != home:
            v.outstanding_tokens = 10_000
    # The other home is overloaded and so is nothing else: home stays.
    assert router.choose(req((3,)), views, 0.0) == home
    views[home].outstanding_tokens = 50_000
    views[5 if home != 5 else 4].outstanding_tokens = 10
    least = 5 if home != 5 else 4
    assert router.choose(req((3,)), views, 0.0) == least


def test_requests_without_prefix_go_to_the_least_loaded() -> None:
    router = ROUTERS.create("prefix-affinity")
    views = [View(0, 300), View(1, 100), View(2, 200)]
    assert router.choose(req(None), views, 0.0) == 1


def test_bad_router_parameters_are_named() -> None:
    with pytest.raises(ValueError, match="imbalance"):
        ROUTERS.create("prefix-affinity", imbalance=0.5)
    with pytest.raises(ValueError, match="unknown router"):
        ROUTERS.create("nope")
