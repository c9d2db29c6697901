"""Human-readable rendering of runs: rich tables, run directories, figures and the HTML report.

The figures and the HTML page live in ``fairserve.report.plots`` and
``fairserve.report.html`` (imported on use: they load matplotlib).
"""

from fairserve.report.run_dir import (
    RunData,
    RunDir,
    RunDirError,
    read_run_dir,
    run_data_from_result,
    write_run_dir,
)
from fairserve.report.tables import engine_table, print_summary, summary_table

__all__ = [
    "RunData",
    "RunDir",
    "RunDirError",
    "engine_table",
    "print_summary",
    "read_run_dir",
    "run_data_from_result",
    "summary_table",
    "write_run_dir",
]
