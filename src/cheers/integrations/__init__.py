"""Integrations that plug cheers into other projects' evaluation harnesses.

Each module imports without the harness installed (it subclasses the harness's base class
when it is there, and a plain object otherwise), so cheers never depends on them:

- :mod:`cheers.integrations.vlmevalkit` — VLMEvalKit's model interface (``generate_inner``);
- :mod:`cheers.integrations.lmms_eval` — lmms-eval's model interface (``generate_until``).
"""
