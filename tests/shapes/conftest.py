"""Make ``src`` importable when the package is not installed (plain ``pytest`` from a checkout)."""

from __future__ import annotations

import sys
from pathlib import Path

try:
    import cheers.shapes  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
