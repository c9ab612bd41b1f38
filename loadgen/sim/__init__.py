"""Simulated vLLM-like GPU backends (see docs/simulator.md).

``engine`` (+ ``scheduler``, ``kv_cache``, ``request``): one GPU server, pure, on an injected timeline.
``profile`` + ``profiles/*.yaml``: step-time fits and KV capacity with their sources.
``server``, ``http11``, ``streams``, ``responses``, ``metrics``, ``faults``, ``runner``: real time
(``sluice sim``). ``virtual`` (+ ``virtual_backend``, ``virtual_room``, ``flight``, ``records``):
virtual time with Sluice's decision code and fleet state in the loop; ``oracle``: the benchmark-only
clairvoyant policy. ``fleet_config``: the fleet file.
"""
