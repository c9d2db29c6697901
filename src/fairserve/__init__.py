"""fairserve: fair, SLO-aware scheduling for shared LLM inference."""

__version__ = "0.1.0"
