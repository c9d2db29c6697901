"""The series behind the figures, on hand-built records."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from fairserve.report.plots import (
    CDF_POINTS,
    _cdf_points,
    _count_by,
    _kv_tokens,
    binned_percentiles,
    run_series,
    service_share,
)
from fairserve.report.run_dir import records_frame
from tests.report.test_run_dir import tiny_records


def series():
    return run_series(records_frame("x", tiny_records().to_numpy()), "x", ("a", "b"), 0.0)


def test_run_series_codes_and_queue_exit() -> None:
    s = series()
    assert s.tenant.tolist() == [0, 1, 0]
    assert s.completed.tolist() == [True, True, False]
    # Never scheduled and no first token: leaves the queue when it ends (fails).
    assert s.leave_queue_s.tolist() == [0.5, 1.0, 2.0]


def test_waiting_and_running_counts() -> None:
    s = series()
    grid = np.array([0.25, 0.75, 1.5, 2.5])
    waiting = _count_by(np.sort(s.arrival_s), grid) - _count_by(np.sort(s.leave_queue_s), grid)
    assert waiting.tolist() == [1, 0, 0, 0]
    running = _count_by(np.sort(s.leave_queue_s), grid) - _count_by(np.sort(s.finish_s), grid)
    assert running.tolist() == [0, 1, 2, 1]  # request 0 runs until 3 s


def test_kv_estimate_holds_prompt_and_grows_with_output() -> None:
    s = series()
    # At 1.5 s: request 0 holds 100 prompt + 20 * (0.5 / 2.0) generated; request 1 holds
    # 50 + 10 * (0.3 / 0.8). After 3 s everything is freed.
    expected = 100 + 20 * 0.25 + 50 + 10 * 0.375
    got = _kv_tokens(s, np.array([0.25, 1.5, 3.5]))
    assert got == pytest.approx([0.0, expected, 0.0])


def test_cdf_is_bounded_and_monotone() -> None:
    values = np.random.default_rng(0).exponential(1.0, 100_000)
    x, y = _cdf_points(np.append(values, np.nan))
    assert len(x) == CDF_POINTS
    assert np.all(np.diff(x) >= 0) and y[-1] == 1.0


def test_binned_percentiles() -> None:
    times = np.array([0.1, 0.2, 0.3, 1.5, 1.6])
    values = np.array([3.0, 1.0, 2.0, 10.0, np.nan])
    edges = np.array([0.0, 1.0, 2.0, 3.0])
    p50, p100 = binned_percentiles(times, values, edges, (0.5, 1.0))
    assert p50[:2].tolist() == [2.0, 10.0] and np.isnan(p50[2])
    assert p100[:2].tolist() == [3.0, 10.0]


def test_service_share_against_weighted_fair_share() -> None:
    # Two tenants, each with one request running over the whole span with equal service.
    frame = pl.DataFrame(
        {
            "tenant": ["a", "b"],
            "outcome": ["completed", "completed"],
            "arrival_s": [0.0, 0.0],
            "first_scheduled_s": [0.0, 0.0],
            "first_token_s": [0.1, 0.1],
            "finish_s": [10.0, 10.0],
            "prompt_tokens": [100, 100],
            "output_tokens": [50, 50],
        }
    )
    s = run_series(frame, "x", ("a", "b"), 0.0)
    share, fair = service_share(s, 2, [2.0, 1.0], np.linspace(0.0, 10.0, 6))
    assert share == pytest.approx(np.full((2, 5), 0.5))
    assert fair[0] == pytest.approx(np.full(5, 2 / 3)) and fair[1] == pytest.approx(
        np.full(5, 1 / 3)
    )


def test_figures_style_each_run_and_keep_legends_outside(compare_dir) -> None:
    from fairserve.report.figures import report_figures
    from fairserve.report.run_dir import read_run_dir

    run = read_run_dir(compare_dir)
    figures = report_figures(run, groups=[["fifo"], ["vtc"]])
    assert list(figures) == [
        "latency_tails", "slo_attainment", "latency_over_time", "load_over_time",
        "service_share", "predictor_error",
    ]  # fmt: skip
    for stem, fig in figures.items():
        assert all(ax.get_legend() is None for ax in fig.axes), stem  # no legend on the data
        if stem != "predictor_error":
            assert fig.legends, stem
    ax = figures["latency_tails"].axes[0]
    assert ax.get_xscale() == "logit" and ax.get_yscale() == "log"
    styles = {(line.get_color(), str(line.get_linestyle())) for line in ax.get_lines()[:2]}
    assert len(styles) == 2  # its own colour and its own dash pattern per run
    # chat's TTFT objective is drawn on its TTFT panel.
    chat = next(a for a in figures["latency_tails"].axes if a.get_title() == "chat: TTFT")
    assert any(list(line.get_ydata()) == [1.0, 1.0] for line in chat.get_lines())


def test_coinciding_runs_are_one_curve_named_together(compare_dir) -> None:
    from fairserve.report.figures import report_figures
    from fairserve.report.run_dir import read_run_dir

    run = read_run_dir(compare_dir)
    fig = report_figures(run, groups=[["fifo", "vtc"]])["latency_tails"]
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["fifo = vtc", "SLO"]


def test_one_predictor_panel_per_distinct_predictor(compare_dir, tmp_path) -> None:
    from fairserve.report.figures import predictor_error_figure
    from fairserve.report.run_dir import read_run_dir, write_run_dir
    from tests.report.conftest import run_of, small_workload

    shared = predictor_error_figure(read_run_dir(compare_dir))  # fifo and vtc, one predictor
    assert shared is not None and len([a for a in shared.axes if a.get_visible()]) == 1
    assert shared.axes[0].get_title().startswith("driftsched (fifo, vtc): MAE")
    wl = small_workload()
    runs = [run_of(wl, "a", "fifo", "oracle"), run_of(wl, "b", "fifo", "history")]
    two = predictor_error_figure(read_run_dir(write_run_dir(tmp_path, "compare", {}, runs)))
    assert two is not None and [a.get_title().split(" ")[0] for a in two.axes] == [
        "oracle", "history",
    ]  # fmt: skip
