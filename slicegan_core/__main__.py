"""``python -m slicegan_core ...``: see :mod:`slicegan_core.cli`."""
import os
import sys

from .cli import main
from .distributed import under_torchrun

status = main()
if under_torchrun():
    # A process torchrun started ends here without the interpreter's shutdown: gloo's worker threads can still
    # be releasing the last collective's tensors, which needs the GIL, and a thread that asks for the GIL while
    # the interpreter finalises is ended by force, which aborts the process ("terminate called without an active
    # exception", SIGABRT; seen in a core dump: Py_FinalizeEx on the main thread, ProcessGroupGloo threads alive).
    # Every file the run writes is already written atomically and fsynced; only the streams need flushing.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(status or 0))
sys.exit(status)
