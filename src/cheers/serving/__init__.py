"""An OpenAI-compatible server for Cheers, with request batching and a web UI (``cheers serve``).

Needs the ``serve`` extra (``pip install "cheers[serve]"``: FastAPI, uvicorn). See
docs/serving.md.
"""

from __future__ import annotations

try:
    import fastapi  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as err:  # pragma: no cover - depends on the installation
    from cheers.errors import CheersError

    raise CheersError(
        f"serving needs FastAPI and uvicorn ({err.name} is missing); install them with "
        'pip install "cheers[serve]"'
    ) from err

from cheers.serving.app import create_app, serve
from cheers.serving.config import ServerConfig

__all__ = ["ServerConfig", "create_app", "serve"]
