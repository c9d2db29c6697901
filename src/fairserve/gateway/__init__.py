"""The live gateway: an OpenAI-compatible HTTP server that runs the core's policies.

``app.create_app(config)`` builds the ASGI app; ``engine_server`` is a simulated
OpenAI-compatible engine that runs the simulator's engine model in real time;
``bench`` replays a workload against any OpenAI-compatible endpoint.
"""
