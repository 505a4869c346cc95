"""Import path for the evaluation tests: this folder, so that ``eval_fakes`` imports under any
pytest import mode."""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))
