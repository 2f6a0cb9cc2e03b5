"""Make the collection importable as ansible_collections.greenlight.deploy for plain pytest runs."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COLLECTIONS = REPO / ".collections"
LINK = COLLECTIONS / "ansible_collections" / "greenlight" / "deploy"

if "ansible_collections" not in sys.modules and not any(p.endswith("ansible_collections") for p in sys.path):
    if not LINK.exists():
        LINK.parent.mkdir(parents=True, exist_ok=True)
        LINK.symlink_to(REPO)
    if str(COLLECTIONS) not in sys.path:
        sys.path.insert(0, str(COLLECTIONS))
