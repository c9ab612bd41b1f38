"""The HTTP data plane: an aiohttp proxy in front of OpenAI-compatible LLM servers.

``router.app.build_app`` builds the application; ``router.app.start_server``
serves it. Nothing here decides where a request goes: that is the
``Decider`` (``decision/``), fed with ``RequestFeatures`` and snapshots of
``state.FleetState``.
"""
