"""The HTML report: self-contained, with every plot and the summary table."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from fairserve.cli.app import app
from fairserve.report.html import write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Anything that would make a browser fetch: src/href/action/poster to a URL, CSS url() or
# @import of one, or a protocol-relative address.
EXTERNAL = re.compile(
    r"""(?:src|href|action|poster|srcset)\s*=\s*["']?\s*(?:https?:)?//"""
    r"""|url\(\s*["']?\s*(?:https?:)?//|@import""",
    re.IGNORECASE,
)


def embedded_images(html: str) -> list[str]:
    return re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,', html)


def assert_self_contained(html: str) -> None:
    assert not EXTERNAL.search(html), EXTERNAL.search(html)
    assert "<script" not in html.lower()
    assert "http://" not in html and "https://" not in html


def test_simulate_report_has_plots_and_table(simulate_dir: Path) -> None:
    path = write_report(simulate_dir)
    assert path == simulate_dir / "report.html"
    html = path.read_text()
    assert embedded_images(html) == [
        "Latency tails",
        "SLO attainment over time",
        "TTFT over time",
        "Queue, running requests and KV use over time",
        "Service share against the fair share",
    ]
    assert "<h2>Summary</h2>" in html and "<h2>Per tenant</h2>" in html
    # The verdict comes first, and judges the one tenant with an SLO.
    assert html.index('id="verdict"') < html.index("<h2>Summary</h2>")
    verdict = html.split('id="verdict"')[1].split("</section>")[0]
    assert "chat (TTFT ≤ 1 s)" in verdict and "batch" not in verdict
    assert "SLOs: chat: TTFT ≤ 1 s" in html
    for header in ("TTFT p99 (ms)", "E2E p99 (s)", "goodput (% of requests)", "Jain"):
        assert header in html
    assert re.search(r"<td>chat</td><td>\d+</td>", html)  # a per-tenant row with its count
    assert_self_contained(html)
    stems = ("latency_tails", "slo_attainment", "latency_over_time", "load_over_time")
    for stem in (*stems, "service_share"):
        assert (simulate_dir / "plots" / f"{stem}.png").read_bytes().startswith(PNG_MAGIC)


def test_compare_report_overlays_configurations(compare_dir: Path, tmp_path: Path) -> None:
    out = write_report(compare_dir, tmp_path / "elsewhere" / "cmp.html")
    html = out.read_text()
    assert "Output-length predictor error" in embedded_images(html)
    assert len(embedded_images(html)) == 6
    summary = html.split("<h2>Summary</h2>")[1].split("</table>")[0]
    assert "<td>fifo</td>" in summary and "<td>vtc</td>" in summary
    assert_self_contained(html)
    assert (compare_dir / "plots" / "predictor_error.png").exists()


def test_report_command(simulate_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "r.html"
    result = CliRunner().invoke(app, ["report", str(simulate_dir), "--out", str(target)])
    assert result.exit_code == 0, result.output
    assert f"report written to {target}" in result.output.replace("\n", "")
    assert embedded_images(target.read_text())
    missing = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert missing.exit_code == 2
    assert "not a run directory" in missing.output


def test_report_without_slos_says_so(tmp_path: Path) -> None:
    from fairserve.report.run_dir import write_run_dir
    from tests.report.conftest import run_of, small_workload

    out = write_run_dir(tmp_path, "simulate", {}, [run_of(small_workload(), "fifo", "fifo")])
    html = write_report(out).read_text()
    assert "No tenant has an SLO" in html
    assert "SLO attainment over time" not in embedded_images(html)


def test_rewritten_report_drops_stale_figures(simulate_dir: Path) -> None:
    stale = simulate_dir / "plots" / "latency_cdf.png"  # drawn by an older report
    stale.write_bytes(PNG_MAGIC)
    mine = simulate_dir / "plots" / "notes.png"  # not the report's: left alone
    mine.write_bytes(PNG_MAGIC)
    write_report(simulate_dir)
    assert not stale.exists() and mine.exists()
