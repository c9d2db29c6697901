"""The sweep report's verdict: the knee and who does best past it, from a hand-made table."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from fairserve.report.sweep import sweep_sentences, sweep_summary, write_sweep_report

TABLE = pl.DataFrame({
    "policy": ["fifo"] * 3 + ["vtc"] * 3,
    "load": [0.5, 1.0, 1.5] * 2,
    "seed": [0] * 6,
    "ttft_p99_s": [0.1, 0.5, 2.0, 0.1, 0.15, 0.3],
    "goodput_fraction": [1.0, 0.8, 0.5, 1.0, 0.95, 0.9],
    "jain": [0.9, 0.7, 0.6, 0.95, 0.97, 0.98],
})  # fmt: skip


def test_sentences_name_the_knee_and_the_best_past_it() -> None:
    assert sweep_sentences(sweep_summary(TABLE), ["policy"]) == [
        "The knee (TTFT p99 past 2x its lowest-load value) comes at load 1 for fifo; "
        "at load 1.5 for vtc.",
        "At load 1: vtc meets the SLOs for the most requests (95.0%), fifo for the fewest "
        "(80.0%); Jain's index is highest under vtc (0.970), lowest under fifo (0.700).",
        "At load 1.5: vtc meets the SLOs for the most requests (90.0%), fifo for the fewest "
        "(50.0%); Jain's index is highest under vtc (0.980), lowest under fifo (0.600).",
    ]


def test_knee_not_reached_is_said(tmp_path: Path) -> None:
    flat = TABLE.with_columns(pl.lit(0.1).alias("ttft_p99_s"))
    first = sweep_sentences(sweep_summary(flat), ["policy"])[0]
    assert first.endswith("comes not up to load 1.5 for fifo and vtc.")


def test_page_has_the_verdict_and_redrawn_figures(tmp_path: Path) -> None:
    TABLE.with_columns(
        pl.lit("w").alias("workload"),
        pl.lit(None, dtype=pl.String).alias("predictor"),
        pl.lit("round-robin").alias("router"),
        *(pl.col("ttft_p99_s").alias(c) for c in ("ttft_p50_s", "e2e_p50_s", "e2e_p99_s")),
        pl.lit(1.0).alias("goodput_req_s"),
        pl.lit(10.0).alias("max_service_diff"),
        pl.lit(100.0).alias("throughput_tok_s"),
    ).write_parquet(tmp_path / "results.parquet")
    (tmp_path / "sweep.json").write_text('{"spec": {"name": "hand-made"}}')
    page = write_sweep_report(tmp_path).read_text()
    assert page.index('id="verdict"') < page.index("<h2>Capacity knee</h2>")
    assert "<td>fifo</td><td>0.1 at 0.5</td>".replace("0.1", "100") in page
    assert page.count("data:image/png;base64,") == 3
    for stem in ("latency_vs_load", "goodput_vs_load", "fairness_vs_load"):
        assert (tmp_path / "plots" / f"{stem}.png").is_file()
