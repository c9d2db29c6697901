"""The Workload container: validation, the Request stream, reshaping."""

from __future__ import annotations

import numpy as np
import pytest

from fairserve.core.model import SLO, Request, Tenant
from fairserve.workload import TraceError, Workload


def small() -> Workload:
    return Workload.from_arrays(
        [3.0, 1.0, 2.0],
        [10, 20, 30],
        [1, 2, 3],
        ["b", "a", "b"],
        tenants=[Tenant("b", weight=2, priority=1, slo=SLO("fast", ttft_s=1.0))],
    )


def test_from_arrays_sorts_by_arrival_and_keeps_rows_together() -> None:
    wl = small()
    assert wl.arrival_s.tolist() == [1.0, 2.0, 3.0]
    assert wl.prompt_tokens.tolist() == [20, 30, 10]
    assert wl.tenant.tolist() == ["a", "b", "b"]
    assert wl.tenant_at(0) == "a"
    assert set(wl.tenant_names()) == {"a", "b"}
    assert wl.duration_s == 2.0
    assert len(wl) == 3


def test_requests_carry_tenant_config_and_sequential_ids() -> None:
    reqs = list(small().requests())
    assert all(isinstance(r, Request) for r in reqs)
    assert [r.id for r in reqs] == [0, 1, 2]
    assert [(r.tenant, r.priority, r.slo_class) for r in reqs] == [
        ("a", 0, None),
        ("b", 1, "fast"),
        ("b", 1, "fast"),
    ]
    assert [r.output_tokens for r in reqs] == [2, 3, 1]


def test_requests_is_lazy_and_spans_batches() -> None:
    n = 200_000  # more than one internal batch
    wl = Workload.from_arrays(np.arange(n, dtype=float), np.ones(n, int), np.full(n, 2))
    stream = wl.requests()
    first = next(stream)
    assert first.id == 0 and first.arrival_s == 0.0
    rest = list(stream)
    assert len(rest) == n - 1 and rest[-1].id == n - 1 and rest[-1].arrival_s == n - 1


def test_failed_rows_become_requests_that_fail() -> None:
    wl = Workload.from_arrays([0, 1, 2], [5, 5, 5], [3, 0, 4], failed=[False, True, False])
    assert wl.n_failed == 1
    reqs = list(wl.requests())
    assert [(r.id, r.output_tokens, r.fails) for r in reqs] == [
        (0, 3, False),
        (1, 0, True),
        (2, 4, False),
    ]
    assert reqs[1].problem() is None  # 0 output tokens are fine on a request that fails
    assert [r.fails for r in wl.drop_failed().requests()] == [False, False]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"prompt_tokens": [1, 0]},
            "row 1: column 'prompt_tokens': expected an integer >= 1, got 0",
        ),
        ({"output_tokens": [1, -3]}, "column 'output_tokens': expected an integer >= 1"),
        ({"arrival_s": [0.0, float("nan")]}, "column 'arrival_s': expected a finite number"),
        ({"arrival_s": [-1.0, 0.0]}, "row 0: column 'arrival_s'"),
        ({"prompt_tokens": [1.5, 2]}, "column 'prompt_tokens': expected an integer, got 1.5"),
        ({"prompt_tokens": [1, 2, 3]}, "has shape (3,), expected (2,)"),
    ],
)
def test_from_arrays_rejects_bad_columns(kwargs: dict[str, object], message: str) -> None:
    columns: dict[str, object] = {
        "arrival_s": [0.0, 1.0],
        "prompt_tokens": [1, 2],
        "output_tokens": [1, 1],
    }
    columns.update(kwargs)
    with pytest.raises(TraceError) as info:
        Workload.from_arrays(**columns)  # type: ignore[arg-type]
    assert message in str(info.value)


def test_unsorted_input_is_an_error_when_sorting_is_off() -> None:
    with pytest.raises(TraceError, match="sorted"):
        Workload.from_arrays([2.0, 1.0], [1, 1], [1, 1], sort=False)


def test_columns_are_read_only_and_inputs_are_not_frozen() -> None:
    arrival = np.array([0.0, 1.0])
    wl = Workload.from_arrays(arrival, [1, 1], [1, 1])
    arrival[0] = 5.0  # the caller's array is still writable and not shared
    assert wl.arrival_s[0] == 0.0
    with pytest.raises(ValueError):
        wl.arrival_s[0] = 3.0


def test_prefix_hashes_stay_tuples_per_row() -> None:
    wl = Workload.from_arrays(
        [0, 1], [600, 700], [1, 1], prefix_hashes=[(1, 2), (1, 3)], prefix_block_tokens=512
    )
    reqs = list(wl.requests())
    assert reqs[1].prefix_hashes == (1, 3)
    assert reqs[1].prefix_block_tokens == 512


def test_take_with_a_mask_and_indices() -> None:
    wl = small()
    assert wl.take(np.array([True, False, True])).prompt_tokens.tolist() == [20, 10]
    assert wl.take([2]).tenant.tolist() == ["b"]
