"""``fairserve sweep``: a grid of simulations on Ray (or a process pool), resumable.

A sweep spec (YAML, validated with pydantic; docs/reports.md has the
reference) names workloads, policies, predictors, routers, load levels and
seeds. Every combination is a *cell*: one ``simulate`` run of one workload
scaled to one load, with one seed. A cell is identified by a hash of its full
definition (workload file contents included, its path not), so

- a finished cell is stored as ``OUT/cells/<id>.json`` and never rerun: an
  interrupted sweep started again runs only the cells without a file, and a
  grid grown by a load level runs only the new cells;
- every cell is deterministic (the workload and random routers are seeded by
  the cell's seed), so Ray and the process pool give the same numbers.

The results are ``OUT/results.parquet`` and ``OUT/results.csv`` (one row per
cell: the configuration columns and the metrics) and three figures in
``OUT/plots/``: latency, goodput and fairness against load.

The modules follow those steps: :mod:`.spec` (the YAML file), :mod:`.plan`
(the cells and their ids), :mod:`.run` (one cell), :mod:`.store` (stored cells,
the table, the figures) and :mod:`.runner` (the grid on Ray or a pool).
"""

from fairserve.experiments.sweep.plan import CELL_FORMAT_VERSION, Cell, plan_cells
from fairserve.experiments.sweep.run import measure_capacity, run_cell
from fairserve.experiments.sweep.runner import SweepError, SweepResult, run_sweep
from fairserve.experiments.sweep.spec import (
    SweepSpec,
    SweepSpecError,
    load_sweep_spec,
    parse_sweep_spec,
)

__all__ = [
    "CELL_FORMAT_VERSION",
    "Cell",
    "SweepError",
    "SweepResult",
    "SweepSpec",
    "SweepSpecError",
    "load_sweep_spec",
    "measure_capacity",
    "parse_sweep_spec",
    "plan_cells",
    "run_cell",
    "run_sweep",
]
