"""The YAML spec and the ``trace stats`` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fairserve.cli.trace import trace_app
from fairserve.workload import TraceError, load

from .conftest import BURSTGPT_HEADER, REPO, TRACES, write

EXAMPLES = REPO / "examples" / "workloads"

SPEC = """
seed: 3
duration_s: 300
sources:
  - tenant: chat
    weight: 2
    slo: {name: interactive, ttft_s: 1.0}
    arrival: {process: gamma, rate_per_s: 4, cv: 2}
    prompt: {dist: lognormal, mean_tokens: 300, sigma: 0.5}
    output: {dist: zipf, a: 1.2, max_tokens: 500}
    conversation: {turns_mean: 2, think_time_s: 5, shared_prefix_tokens: 32}
  - tenant: batch
    priority: 2
    arrival: {process: poisson, rate_per_s: 1}
    prompt: {dist: constant, tokens: 100}
    output: {dist: constant, tokens: 50}
"""


def test_spec_builds_tenants_with_configs(tmp_path: Path) -> None:
    path = write(tmp_path / "w.yaml", SPEC)
    wl = load(path)
    assert set(wl.tenant_names()) == {"chat", "batch"}
    assert wl.arrival_s.max() < 300
    assert wl.tenant_config("chat").weight == 2
    assert wl.tenant_config("chat").slo.ttft_s == 1.0
    batch = wl.tenant == "batch"
    assert np.all(wl.prompt_tokens[batch] == 100)
    assert int(batch.sum()) == pytest.approx(300, abs=70)
    reqs = [r for r in wl.requests() if r.tenant == "batch"]
    assert reqs and all(r.priority == 2 for r in reqs)
    again = load(path)
    assert np.array_equal(wl.arrival_s, again.arrival_s)
    assert not np.array_equal(wl.arrival_s, load(path, seed=4).arrival_s)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sources: []", "sources: List should have at least 1 item"),
        ("sources: [{tenant: a}]", "exactly one of 'arrival' (generated) or 'trace'"),
        (
            "sources: [{tenant: a, arrival: {process: gamma, rate_per_s: 1, cv: -1}, "
            "prompt: {dist: constant, tokens: 1}, output: {dist: constant, tokens: 1}}]",
            "sources.0.arrival.gamma.cv: Input should be greater than or equal to 0",
        ),
        (
            "sources: [{tenant: a, arrival: {process: sometimes}}]",
            "sources.0.arrival",
        ),
        ("seed: 1\nsourcez: []", "sourcez: Extra inputs are not permitted"),
        ("- 1\n- 2", "must be a mapping"),
    ],
)
def test_spec_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path / "bad.yaml", text)
    with pytest.raises(TraceError) as info:
        load(path)
    assert message in str(info.value)


def test_spec_needs_a_horizon_or_count(tmp_path: Path) -> None:
    path = write(
        tmp_path / "w.yaml",
        "sources: [{tenant: a, arrival: {process: poisson, rate_per_s: 1}, "
        "prompt: {dist: constant, tokens: 1}, output: {dist: constant, tokens: 1}}]",
    )
    with pytest.raises(TraceError, match=r"sources\[0\]: give 'n_requests' or 'duration_s'"):
        load(path)


def test_spec_with_trace_sources_and_transforms(tmp_path: Path) -> None:
    write(
        tmp_path / "burst.csv",
        BURSTGPT_HEADER
        + "".join(
            f"{i},{'GPT-4' if i % 2 else 'ChatGPT'},{10 + i},{i % 3},5,API log\n" for i in range(40)
        ),
    )
    path = write(
        tmp_path / "w.yaml",
        """
sources:
  - trace: burst.csv
    options: {tenant_by: model}
    transforms: [{op: drop_failed}]
tenants:
  GPT-4: {weight: 3, priority: 1}
transforms:
  - {op: window, start_s: 10, end_s: 30}
  - {op: scale_to_rate, rate_per_s: 4}
""",
    )
    wl = load(path)
    assert wl.n_failed == 0
    assert set(wl.tenant_names()) == {"ChatGPT", "GPT-4"}
    assert wl.tenant_config("GPT-4").weight == 3
    assert (len(wl) - 1) / wl.duration_s == pytest.approx(4.0)


def test_examples_build() -> None:
    for path in sorted(EXAMPLES.glob("*.yaml")):
        needs = {"azure": "azure-llm-2023", "servegen": "servegen"}
        if any(k in path.name and not (TRACES / v).exists() for k, v in needs.items()):
            continue  # the example reads ../shared/traces, absent here
        wl = load(path)
        assert len(wl) > 100, path


# ---------------------------------------------------------------- CLI

runner = CliRunner()


def test_stats_json_has_the_documented_keys(tmp_path: Path) -> None:
    path = write(tmp_path / "w.yaml", SPEC)
    result = runner.invoke(trace_app, ["stats", str(path), "--json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    for key in ("requests", "duration_s", "rate_per_s", "interarrival_cv", "tenants"):
        assert key in stats
    for key in ("prompt_tokens", "output_tokens"):
        assert set(stats[key]) >= {"mean", "p50", "p99"}
    assert stats["requests"] == len(load(path))
    assert sum(stats["tenants"].values()) == pytest.approx(1.0)
    assert 0 < stats["prefix_reuse_ratio"] < 1


def test_stats_human_output_and_plot(tmp_path: Path) -> None:
    path = write(tmp_path / "w.yaml", SPEC)
    png = tmp_path / "out.png"
    result = runner.invoke(trace_app, ["stats", str(path), "--plot", str(png)])
    assert result.exit_code == 0, result.output
    assert "interarrival_cv" in result.output and "chat" in result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_stats_reports_bad_rows_and_skips_on_request(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", "arrival_s,prompt_tokens,output_tokens\n0,1,1\n1,x,1\n2,3,4\n")
    result = runner.invoke(trace_app, ["stats", str(path)])
    assert result.exit_code == 2
    assert "t.csv:3: column 'prompt_tokens': expected an integer >= 1, got 'x'" in result.output
    result = runner.invoke(trace_app, ["stats", str(path), "--skip-bad-rows", "--json"])
    assert result.exit_code == 0
    assert "skipped 1 malformed rows" in result.stderr
    assert json.loads(result.stdout)["skipped_rows"] == 1


def test_stats_of_a_missing_file(tmp_path: Path) -> None:
    result = runner.invoke(trace_app, ["stats", str(tmp_path / "none.csv")])
    assert result.exit_code == 2
    assert "no such file" in result.output
