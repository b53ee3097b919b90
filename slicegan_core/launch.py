"""``--nproc N``: torchrun (torch.distributed.run) in this process, so the command keeps the pid its caller
started, with a failure reported in one line instead of torchrun's traceback.

A process that met bad input writes its one sentence to a file named by ``ERROR_FILE`` (set here, inherited
by the processes) and exits with status 2; the launch then prints the first process's sentence as the one
``error:`` line and exits 2. (Printing it from process 0 alone lost it when another process failed first and
torchrun stopped process 0 before it printed.) A stop (SIGTERM / SIGINT) ends the processes with a checkpoint and exits 0,
as a one-process run does. Any other failure (a crash, a kill) gets one sentence naming the process.
"""
from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

# Environment variable: where a process of this launch writes its bad-input sentence (PATH.RANK).
ERROR_FILE = "SLICEGAN_ERROR_FILE"


def main(argv: list[str]) -> int:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun_main

    # torchrun logs every failed process at ERROR level and the elastic agent's progress at INFO/WARNING; the
    # processes' own output (stdout, stderr) is untouched.
    # Each of their modules sets its own logger's level, so every one already imported is set here.
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    # torchrun sets one OpenMP thread per process anyway, with a five-line warning when the caller has not.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    errors = Path(tempfile.mkdtemp(prefix="slicegan-errors-"))
    os.environ[ERROR_FILE] = str(errors / "error")
    try:
        torchrun_main(argv)
    except SignalException:
        # A stop (SIGTERM / SIGINT, e.g. the Train page's Stop button): torchrun has passed the signal on and
        # waited for every process, which checkpointed, wrote "stopped" and printed how to resume. The agent
        # re-raises the signal afterwards; like a one-process run that was stopped, this is not a failure.
        return 0
    except ChildFailedError as failed:
        failures = sorted(failed.failures.items())
        if any(failure.exitcode == 2 for _, failure in failures):
            sentences = sorted(errors.glob("error.*"), key=lambda path: int(path.suffix[1:]))
            if sentences:
                print(f"error: {sentences[0].read_text()}", file=sys.stderr)
            return 2
        rank, failure = failures[0]
        code = failure.exitcode
        how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
        print(f"error: training process {rank} {how}; the others were stopped. The last checkpoint is kept: "
              "resume the run to continue from it.", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(errors, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
