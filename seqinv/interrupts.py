"""Ctrl-C (SIGINT) and SIGTERM stop a run cleanly: no half-written file, the conventional exit code.

Every result file is written through `seqinv.io.atomic_path` (a temporary, then one rename), and a
case's files are removed again when the case does not finish (`seqinv.inference.transaction`), so a run
stopped at any moment leaves only complete outputs; `--skip-existing` then does the rest. SIGTERM would
otherwise end the process without any cleanup, so the CLI turns both signals into an `Interrupted`
exception. A run killed outright (kill -9) cleans nothing; the next run over the same outputs does
(`seqinv.inference.batch.writing_into`), and `--skip-existing` trusts only cases whose files match their
sidecar.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """The run was stopped by a signal. A BaseException, like KeyboardInterrupt: no `except Exception`
    swallows it, and click does not turn it into "Aborted!"."""

    def __init__(self, signum: int):
        self.signum = int(signum)
        self.name = signal.Signals(self.signum).name
        super().__init__(self.name)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


_OWNER_PID: list[int] = []  # the process that installed the handlers (forked workers inherit them)


def _raise(signum, frame):
    if _OWNER_PID and os.getpid() != _OWNER_PID[-1]:  # a forked worker (e.g. a DataLoader): as before
        signal.signal(signum, signal.SIG_DFL)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        os.kill(os.getpid(), signum)
        return
    for sig in SIGNALS:  # a second signal must not cut the cleanup short
        signal.signal(sig, signal.SIG_IGN)
    raise Interrupted(signum)


@contextlib.contextmanager
def signals_raise():
    """Within the block, SIGINT and SIGTERM raise `Interrupted` (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
    for sig in SIGNALS:
        signal.signal(sig, _raise)
    _OWNER_PID.append(os.getpid())
    try:
        yield
    finally:
        _OWNER_PID.pop()
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
