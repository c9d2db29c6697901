"""Human-readable rendering of run summaries (rich tables)."""

from fairserve.report.tables import engine_table, print_summary, summary_table

__all__ = ["engine_table", "print_summary", "summary_table"]
