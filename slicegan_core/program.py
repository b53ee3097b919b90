"""The command-line program's name, in a leaf module that both command parsers import (``cli`` and
``evaluate.cli``), so neither imports the other."""
from __future__ import annotations

import sys
from pathlib import Path

# The installed console command is ``slicegan``; from a checkout it is ``python -m slicegan_core``.
PROG = "slicegan" if Path(sys.argv[0]).name == "slicegan" else "python -m slicegan_core"
