"""``fairserve report``: one self-contained HTML file for a run directory.

The page opens with the verdict (:mod:`fairserve.report.verdict`: what the
runs did to each tenant's SLO, computed from the records), then the tables,
then the figures (:mod:`fairserve.report.figures`).

The page loads nothing: the CSS is inline and every figure is a base64 PNG in
a ``data:`` URI, so it opens offline and can be mailed as one file. The same
figures are written as PNG files to ``RUN_DIR/plots/``.
"""

from __future__ import annotations

import base64
import html
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fairserve.report.figures import report_figures
from fairserve.report.plots import figure_png
from fairserve.report.run_dir import RunDir, read_run_dir
from fairserve.report.verdict import coinciding_groups, slo_text, verdict

__all__ = ["PAGE_CSS", "render_report", "write_report"]

_CAPTIONS = {
    "latency_tails": (
        "Latency tails",
        "TTFT and end-to-end latency of completed requests per tenant, from the median to the "
        "99.9th percentile (logit axis: each step right is ten times rarer) on a log scale; "
        "grey dashes: the tenant's objective. Runs with the same latencies are one line, named "
        "together.",
    ),
    "slo_attainment": (
        "SLO attainment over time",
        "Per tenant with an SLO: the share of the requests arriving in each time bin that met "
        "every objective (a request that did not complete missed it). A dip is a burst the "
        "policy let through to that tenant.",
    ),
    "latency_over_time": (
        "TTFT over time",
        "99th percentile TTFT of the requests arriving in each time bin, per tenant (one run: "
        "with the median, dotted); grey dashes: the objective. A rising curve is a queue "
        "building up.",
    ),
    "load_over_time": (
        "Queue, running requests and KV use over time",
        "Derived from the per-request records. Waiting: arrived, not yet scheduled (bench "
        "runs: no first token yet). KV tokens held is an estimate: prompt plus generated "
        "tokens of running requests, ignoring prefix sharing and preemption.",
    ),
    "service_share": (
        "Service share against the fair share",
        "Each tenant's part of the service (prompt + 2 x output tokens, spread over the time "
        "a request runs) per time window; grey dashes: its weight over the weights of the "
        "tenants with work in the system (drawn from the first run). Below the line with a "
        "queue waiting is unfair; below it without demand is not.",
    ),
    "predictor_error": (
        "Output-length predictor error",
        "Predicted minus actual output tokens of completed requests, one panel per distinct "
        "predictor (the runs that share it pooled; MAE per run in the title), clipped to the "
        "0.5-99.5th percentiles.",
    ),
}

PAGE_CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2rem auto;
       max-width: 1200px; padding: 0 1rem; color: #222; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; } h2 { margin-top: 2.2rem; font-size: 1.25rem; }
.meta { color: #666; font-size: 0.9rem; }
table { border-collapse: collapse; margin: 0.8rem 0; font-size: 0.85rem; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25rem 0.6rem; text-align: right; }
th:first-child, td:first-child, td.text, th.text { text-align: left; }
tr.all td { font-weight: 600; }
thead th { background: #f3f3f3; }
figure { margin: 1rem 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9rem; margin-top: 0.3rem; }
pre { background: #f7f7f7; padding: 0.8rem; overflow-x: auto; font-size: 0.8rem; }
.scroll { overflow-x: auto; max-width: 100%; }
.verdict { background: #f4f8fc; border-left: 4px solid #0072B2; padding: 0.6rem 1rem;
           margin: 1rem 0; }
.verdict h2 { margin-top: 0.3rem; } .verdict li { margin: 0.35rem 0; line-height: 1.4; }
@media (max-width: 900px) { body { margin: 1rem auto; } table { font-size: 0.75rem; } }
"""


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _fmt(value: Any, scale: float = 1.0, digits: int = 2) -> str:
    """A number for a table cell; '-' for a missing figure."""
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return "-"
    if value != value:  # NaN
        return "-"
    return f"{value * scale:,.{digits}f}"


def _pct(value: Any) -> str:
    return "-" if not isinstance(value, int | float) else f"{100 * value:.1f}%"


def _table(headers: Sequence[str], rows: Sequence[tuple[Sequence[str], str]]) -> str:
    """An HTML table; each row is (cells, css class)."""
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = "".join(
        f'<tr class="{cls}">' + "".join(f"<td>{_esc(c)}</td>" for c in cells) + "</tr>"
        for cells, cls in rows
    )
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _latency_cells(s: Mapping[str, Any]) -> list[str]:
    def get(metric: str, stat: str) -> Any:
        return (s.get(metric) or {}).get(stat)

    return [
        f"{s.get('requests', 0):,}",
        f"{s.get('completed', 0):,}",
        _fmt(get("ttft_s", "p50"), 1e3, 0),
        _fmt(get("ttft_s", "p99"), 1e3, 0),
        _fmt(get("tpot_s", "p50"), 1e3, 1),
        _fmt(get("e2e_s", "p50")),
        _fmt(get("e2e_s", "p99")),
        _fmt(get("queue_s", "p99")),
        _pct((s.get("goodput") or {}).get("fraction")),
        _fmt(s.get("throughput_tok_s"), digits=0),
    ]


_LATENCY_HEADERS = [
    "requests", "completed", "TTFT p50 (ms)", "TTFT p99 (ms)", "TPOT p50 (ms)",
    "E2E p50 (s)", "E2E p99 (s)", "queue p99 (s)", "goodput (% of requests)", "output tok/s",
]  # fmt: skip


def _comparison_table(run: RunDir) -> str:
    rows = []
    for label in run.labels:
        entry = run.summaries.get(label, {})
        s, fair = entry.get("summary") or {}, entry.get("fairness") or {}
        kv = (s.get("kv_utilization") or {}).get("mean")
        rows.append(
            (
                [label, *_latency_cells(s), _fmt(fair.get("jain"), digits=3),
                 _fmt(fair.get("max_service_diff"), digits=0), _fmt(fair.get("worst_wait_s")),
                 str(s.get("preemptions", "-")), _pct(kv)],
                "",
            )
        )  # fmt: skip
    headers = ["run", *_LATENCY_HEADERS, "Jain", "max service diff (tokens)", "worst wait (s)",
               "preemptions", "KV util mean"]  # fmt: skip
    return _table(headers, rows)


def _tenant_table(run: RunDir) -> str:
    rows = []
    for label in run.labels:
        s = (run.summaries.get(label) or {}).get("summary") or {}
        prefix = [label] if len(run.labels) > 1 else []
        rows.append(([*prefix, "all", *_latency_cells(s)], "all"))
        for tenant, t in (s.get("per_tenant") or {}).items():
            rows.append(([*prefix, tenant, *_latency_cells(t)], ""))
    headers = (["run"] if len(run.labels) > 1 else []) + ["tenant", *_LATENCY_HEADERS]
    return _table(headers, rows)


def _weights_line(run: RunDir) -> str:
    return ", ".join(f"{_esc(t)}: {run.weights.get(t, 1.0):g}" for t in run.tenants)


def _slos_line(run: RunDir) -> str:
    if not run.slos:
        return "no tenant has an SLO"
    return "; ".join(
        f"{_esc(t)}: {_esc(slo_text(run.slos[t]))}" for t in run.tenants if t in run.slos
    )


def _source_line(run: RunDir) -> str:
    """Where the tenants, weights and policy come from (a live run names its gateway)."""
    parts = []
    for key in ("policy", "router", "predictor"):
        if run.config.get(key):
            parts.append(f"{key}: {_esc(run.config[key])}")
    if run.config.get("tenants_from"):
        parts.append(f"tenants, weights and SLOs from {_esc(run.config['tenants_from'])}")
    return " &middot; ".join(parts)


def _verdict_block(sentences: Sequence[str]) -> str:
    if not sentences:
        return (
            '<section class="verdict" id="verdict"><h2>Verdict</h2><p>No tenant has an SLO, '
            "so there is nothing to judge the runs against: give tenants an <code>slo</code> "
            "in the workload spec or the gateway config (a run directory written before "
            "fairserve stored SLOs has none: run it again).</p></section>"
        )
    items = "".join(f"<li>{_esc(text)}</li>" for text in sentences)
    return f'<section class="verdict" id="verdict"><h2>Verdict</h2><ul>{items}</ul></section>'


def render_report(
    run: RunDir, pngs: Mapping[str, bytes], sentences: Sequence[str] | None = None
) -> str:
    """The report page for ``run`` with the rendered figures ``pngs`` (stem -> PNG bytes).

    ``sentences``: the verdict (computed from ``run`` when not given).
    """
    title = f"fairserve {'live bench' if run.kind == 'bench' else run.kind} report"
    source = _source_line(run)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(title)}: {_esc(run.path.name)}</title>",
        f"<style>{PAGE_CSS}</style></head><body>",
        f"<h1>{_esc(title)}</h1>",
        f'<p class="meta">{_esc(run.path)} &middot; runs: {_esc(", ".join(run.labels))} '
        f"&middot; {len(run.records):,} request records &middot; tenant weights: "
        f"{_weights_line(run)} &middot; generated {_esc(time.strftime('%Y-%m-%d %H:%M'))}</p>",
        f'<p class="meta">SLOs: {_slos_line(run)}'
        + (f" &middot; {source}" if source else "")
        + "</p>",
        _verdict_block(verdict(run) if sentences is None else sentences),
        "<h2>Summary</h2>",
        _comparison_table(run),
        "<h2>Per tenant</h2>",
        _tenant_table(run),
    ]
    for stem, png in pngs.items():
        heading, caption = _CAPTIONS.get(stem, (stem, ""))
        data = base64.b64encode(png).decode("ascii")
        parts.append(
            f'<h2 id="{_esc(stem)}">{_esc(heading)}</h2><figure>'
            f'<img alt="{_esc(heading)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_esc(caption)}</figcaption></figure>"
        )
    config = json.dumps(run.config, indent=2, sort_keys=True)
    parts.append(
        f"<h2>Configuration</h2><details><summary>config.json</summary><pre>{_esc(config)}</pre>"
        "</details></body></html>"
    )
    return "\n".join(parts) + "\n"


def write_report(run_dir: str | Path, out: str | Path | None = None, dpi: int = 100) -> Path:
    """Write the HTML report of ``run_dir`` (default ``RUN_DIR/report.html``) and PNGs to ``RUN_DIR/plots/``.

    Returns the report's path. Raises :class:`~fairserve.report.run_dir.RunDirError`
    when ``run_dir`` is not a run directory.
    """
    run = read_run_dir(run_dir)
    plots = run.path / "plots"
    plots.mkdir(exist_ok=True)
    for stem in (*_CAPTIONS, "latency_cdf"):  # figures an older report drew, this one may not
        (plots / f"{stem}.png").unlink(missing_ok=True)
    groups = coinciding_groups(run)
    pngs = {}
    for stem, fig in report_figures(run, groups).items():
        png = figure_png(fig, dpi=dpi)
        (plots / f"{stem}.png").write_bytes(png)
        pngs[stem] = png
    target = Path(out) if out is not None else run.path / "report.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_report(run, pngs, verdict(run, groups)), encoding="utf-8")
    return target
