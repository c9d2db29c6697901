"""fairserve's command line: one module per command group.

``app`` assembles the ``fairserve`` command from the groups (``simulate``
and ``compare``, ``gateway``, ``predictor``, ``report``, ``sweep``,
``trace``); ``options`` holds the options several commands share and the one
error printer. Importing this package imports nothing heavy: ``main`` loads
the commands when it runs.
"""

from __future__ import annotations


def main() -> None:
    """Console-script entry point (``fairserve``)."""
    from fairserve.cli.app import app

    app()
