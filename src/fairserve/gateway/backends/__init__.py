"""Upstreams of the gateway: any OpenAI-compatible HTTP server, and the simulated engine."""
