"""``python -m slicegan_core ...``: see :mod:`slicegan_core.cli`."""
import sys

from .cli import main

sys.exit(main())
