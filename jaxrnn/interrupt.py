"""Stopping a run cleanly on SIGINT (Ctrl-C) or SIGTERM (a scheduler's preemption notice).

`deferred_signals` is a context manager for the host loop: inside it the first SIGINT or SIGTERM
is only recorded, so the compiled chunk that is running finishes and the loop can save a
checkpoint at that step and raise `Interrupted`; the launcher (`experiments.common.run_main`)
prints how to resume and exits with ``128 + signal number`` (130 for SIGINT, 143 for SIGTERM), as a
shell reports a process that the signal ended. The first signal also restores the default
disposition of both, so a second one ends the process at once, even inside a compiled call or a
save; the checkpoint protocol (`jaxrnn.checkpoint`) leaves the previous checkpoint intact then.

Usage::

    with deferred_signals() as received:
        while ...:
            run one chunk
            if received:             # [signal number] once a signal came
                save a checkpoint
                raise Interrupted(received[0], "... at step N; checkpoint saved in ...")
"""
import contextlib
import os
import signal
import threading

from jaxrnn.errors import JaxrnnError

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(JaxrnnError):
    """A run stopped on a signal after saving what it could; ``exit_code`` is 128 + the signal
    number, ``resumable`` says whether rerunning with ``--resume`` continues it."""

    def __init__(self, signum, message, resumable=True):
        super().__init__(message)
        self.signum, self.exit_code, self.resumable = signum, 128 + signum, resumable


def signal_name(signum):
    return signal.Signals(signum).name


@contextlib.contextmanager
def deferred_signals():
    """Within the block the first SIGINT/SIGTERM is appended to the yielded list instead of
    ending the process; a second one ends it at once. Outside the main thread (where Python
    cannot install handlers) the list stays empty and signals act as usual."""
    received = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum, frame):
        received.append(signum)
        for each in SIGNALS:
            signal.signal(each, signal.SIG_DFL)
        # os.write, not print: the handler may run in the middle of a print to the same stream.
        os.write(2, (f"\n{signal_name(signum)} received: saving a checkpoint after the current "
                     f"chunk, then stopping; send it again to stop at once (the last checkpoint "
                     f"stays intact)\n").encode())

    previous = {each: signal.getsignal(each) for each in SIGNALS}
    for each in SIGNALS:
        signal.signal(each, handler)
    try:
        yield received
    finally:
        for each, disposition in previous.items():
            signal.signal(each, disposition)
