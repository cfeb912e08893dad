"""Checks of the paths a run writes against what it reads, before any work.

The rules live in :mod:`metasr.core.paths` (one home for every command); this module keeps the
names ``metasr.video`` has always exported.
"""

from __future__ import annotations

from metasr.core.paths import check_write_plan, is_inside, same_file

__all__ = ["check_write_plan", "is_inside", "same_file"]
