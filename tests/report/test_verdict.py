"""The verdict: sentences computed from hand-built records and the tenants' SLOs."""

from __future__ import annotations

from pathlib import Path

from fairserve.core.model import SLO, Outcome
from fairserve.metrics.records import RecordArrays, RequestRecords
from fairserve.metrics.summary import summarize
from fairserve.report.run_dir import read_run_dir, write_run_dir
from fairserve.report.verdict import coinciding_groups, format_duration, slo_text, verdict

SLOS = {"a": SLO("interactive", ttft_s=1.0)}


def records(slow_every: int | None, failed: int = 0) -> RecordArrays:
    """100 requests of tenant a (TTFT 0.5 s, or 2 s for every ``slow_every``-th), 10 of b."""
    rec = RequestRecords()
    for i in range(100):
        ttft = 2.0 if slow_every and i % slow_every == 0 else 0.5
        t = float(i)
        if i < failed:
            rec.add(i, "a", -1, Outcome.FAILED, t, float("nan"), float("nan"), t, 100, 0, 0, 0)
        else:
            rec.add(i, "a", 0, Outcome.COMPLETED, t, t, t + ttft, t + ttft + 1.0, 100, 11, 0, 0)
    for i in range(100, 110):
        t = float(i - 100)
        rec.add(i, "b", 0, Outcome.COMPLETED, t, t, t + 5.0, t + 9.0, 100, 11, 0, 0)
    return rec.to_numpy()


def write(tmp: Path, runs: dict[str, RecordArrays], slos: dict[str, SLO] = SLOS) -> Path:
    data = [(label, r, summarize(r).to_dict(), None, None) for label, r in runs.items()]
    return write_run_dir(tmp, "compare", {}, data, slos=slos)


def test_best_run_kept_under_the_objective_worst_named_with_its_share(tmp_path: Path) -> None:
    run = read_run_dir(write(tmp_path, {"calm": records(None), "rushed": records(2)}))
    sentences = verdict(run)
    tenant = next(s for s in sentences if s.startswith("a ("))
    assert tenant.startswith("a (TTFT ≤ 1 s): calm keeps TTFT p99 under its 1 s objective")
    assert "meets the SLO for 100.0%" in tenant
    assert "missed by rushed for 50.0% (TTFT p99 2 s)" in tenant
    # b has no SLO: not judged. The headline compares the runs over the SLO-bound requests.
    assert not any(s.startswith("b") for s in sentences)
    assert sentences[0] == (
        "Over all tenants with an SLO, calm meets it for the most requests (100.0%), "
        "rushed for the fewest (50.0%)."
    )


def test_failed_requests_miss_the_slo(tmp_path: Path) -> None:
    run = read_run_dir(write(tmp_path, {"ok": records(None), "failing": records(None, 10)}))
    tenant = next(s for s in verdict(run) if s.startswith("a ("))
    assert "failing for 10.0%" in tenant


def test_coinciding_runs_are_grouped_and_named_together(tmp_path: Path) -> None:
    runs = {"calm": records(None), "also-calm": records(None), "rushed": records(2)}
    run = read_run_dir(write(tmp_path, runs))
    assert coinciding_groups(run) == [["calm", "also-calm"], ["rushed"]]
    sentences = verdict(run)
    assert any(s.startswith("calm and also-calm give the same latencies") for s in sentences)
    tenant = next(s for s in sentences if s.startswith("a ("))
    assert "calm and also-calm keep TTFT p99 under" in tenant


def test_every_run_alike_says_the_choice_does_not_matter(tmp_path: Path) -> None:
    run = read_run_dir(write(tmp_path, {"x": records(None), "y": records(None)}))
    tenant = next(s for s in verdict(run) if s.startswith("a ("))
    assert "every run meets it for every request" in tenant
    assert "the runs do not differ for a here" in tenant


def test_one_run_and_no_slo(tmp_path: Path) -> None:
    one = read_run_dir(write(tmp_path / "one", {"only": records(4)}))
    assert verdict(one) == [
        "a (TTFT ≤ 1 s): 75.0% of its 100 requests met the SLO; TTFT p99 2 s, over its 1 s "
        "objective."
    ]
    none = read_run_dir(write(tmp_path / "none", {"only": records(4)}, slos={}))
    assert none.slos == {} and verdict(none) == []


def test_formats() -> None:
    assert [format_duration(x) for x in (0.15, 1.0, 1.456, 24.31, 1234.0)] == [
        "150 ms", "1 s", "1.46 s", "24.3 s", "1,234 s",
    ]  # fmt: skip
    assert slo_text(SLO("x", ttft_s=1.0, tpot_s=0.15)) == "TTFT ≤ 1 s, TPOT ≤ 150 ms"
