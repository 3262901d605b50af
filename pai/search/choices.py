"""The searches' plain choices, in a module that imports no torch or pandas: the command line
offers them (and checks them) without loading IMP (`pai.search.imp`)."""

from __future__ import annotations

# What IMP resets the survivors to between levels.
RESETS: tuple[str, ...] = ("rewind", "lr-rewind", "finetune")
# After rewinding to step k > 0: the whole budget again, or the schedule resumed at k.
REWIND_SCHEDULES: tuple[str, ...] = ("restart", "resume")
# Controls: the ablations of `pai.search.ablations`, trained at every level > 0.
CONTROLS: tuple[str, ...] = ("reinit", "shuffle")
