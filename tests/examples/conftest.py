"""The examples are imported as ``examples.*`` from the repository root, as ``shipkit run`` does there."""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

if str(REPO_ROOT) not in sys.path:  # an editable install already has it; a plain checkout may not
    sys.path.insert(0, str(REPO_ROOT))
