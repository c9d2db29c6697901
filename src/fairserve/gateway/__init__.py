"""The live gateway: an OpenAI-compatible HTTP server that runs the core's policies.

``app.create_app(config)`` builds the ASGI app. A request goes through
:mod:`.parse`, :mod:`.admit`, :mod:`.dispatch` and :mod:`.connect`,
:mod:`.relay` and :mod:`.ledger`, carrying its :class:`~.flight.Flight`.
The simulated engine it fronts in demos and tests is :mod:`fairserve.engine_server`;
the load generator is :mod:`fairserve.loadgen`.
"""
