"""``python -m fairserve``: the ``fairserve`` command."""

from fairserve.cli import main

main()
