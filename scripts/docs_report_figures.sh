#!/usr/bin/env bash
# Regenerate the report figures and the page screenshot in docs/img that docs/reports.md,
# the README and the tutorial show: the demo's report, the example sweep's and the demo's
# knee sweep. Run from the repository root:  scripts/docs_report_figures.sh
# (BIN: the fairserve environment's bin folder; OUT: where the runs go).
set -euo pipefail
BIN=${BIN:-.venv/bin}
OUT=${OUT:-runs/docs}
IMG=docs/img
CHROMIUM=$(command -v chromium || command -v chromium-browser || true)

"$BIN/fairserve" demo --out "$OUT/demo"
for stem in latency_tails slo_attainment latency_over_time load_over_time service_share \
    predictor_error; do
    cp "$OUT/demo/plots/$stem.png" "$IMG/report_$stem.png"
done
if [ -n "$CHROMIUM" ]; then  # the top of the page as a 1400 px wide browser shows it
    "$CHROMIUM" --headless --no-sandbox --disable-gpu --no-first-run \
        --user-data-dir="$OUT/chromium" --window-size=1400,1100 \
        --screenshot="$IMG/report_page.png" "file://$PWD/$OUT/demo/report.html" 2>/dev/null
else
    echo "chromium not found: $IMG/report_page.png left as it is" >&2
fi

for sweep in capacity_knee demo_knee; do
    "$BIN/fairserve" sweep "examples/sweeps/$sweep.yaml" --out "$OUT/$sweep" --no-ray \
        --no-progress
    "$BIN/fairserve" report "$OUT/$sweep"
done
for stem in latency goodput fairness; do
    cp "$OUT/capacity_knee/plots/${stem}_vs_load.png" "$IMG/report_sweep_${stem}_vs_load.png"
done
cp "$OUT/demo_knee/plots/latency_vs_load.png" "$IMG/report_demo_knee_latency_vs_load.png"
git rev-parse --short HEAD
