"""Import paths for the Shapes tests.

``src`` is added when the package is not installed (plain ``pytest`` from a checkout), and this
folder so that ``shapes_truth`` imports under any pytest import mode.
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

try:
    import cheers.shapes  # noqa: F401
except ImportError:
    sys.path.insert(0, str(_HERE.parents[1] / "src"))
