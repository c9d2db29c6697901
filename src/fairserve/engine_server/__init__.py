"""The simulated OpenAI-compatible engine: the embedded default backend.

``realtime`` runs the simulator's engine model against the wall clock and
streams each request's tokens as its steps end; ``server`` serves it over
HTTP with the routes, metrics and streaming of a vLLM server, so the gateway,
the load generator and the tests run without a GPU.
"""
