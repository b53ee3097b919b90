"""``--nproc N``: torchrun (torch.distributed.run) in this process, so the command keeps the pid its caller
started, with a failure reported in one line instead of torchrun's traceback.

A process that met bad input has already printed its one ``error:`` line and exited with status 2: the launch
then exits 2 without a word more. A stop (SIGTERM / SIGINT) ends the processes with a checkpoint and exits 0,
as a one-process run does. Any other failure (a crash, a kill) gets one sentence naming the process.
"""
from __future__ import annotations

import logging
import os
import sys


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
            return 2
        rank, failure = failures[0]
        code = failure.exitcode
        how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
        print(f"error: training process {rank} {how}; the others were stopped. The last checkpoint is kept: "
              "resume the run to continue from it.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
