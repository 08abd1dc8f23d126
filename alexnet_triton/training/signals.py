"""Stop signals while a run trains or evaluates: SIGINT (Ctrl-C), SIGTERM or SIGUSR1 is noted, the step or batch
under way finishes, every rank stops at the same point, and the run saves a checkpoint and raises
KeyboardInterrupt(the signal's number)."""

from __future__ import annotations

import signal
from collections.abc import Callable

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)


class StopSignals:
    """A context that notes the STOP_SIGNALS received inside it (restoring the handlers it found on exit).
    ``any_rank``: the largest of a number over every rank (``Layout.any_rank``), so that all ranks agree."""

    def __init__(self, any_rank: Callable[[int], int] = lambda value: value):
        self.any_rank, self.received = any_rank, 0  # the number of a stop signal received (0: none)
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        self._previous = {number: signal.signal(number, self._note) for number in STOP_SIGNALS}
        return self

    def __exit__(self, *exception) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def _note(self, signum, frame) -> None:
        self.received = signum

    def stopping(self) -> bool:
        """Whether any rank has received a stop signal (then every rank holds the highest number received)."""
        self.received = self.any_rank(self.received)
        return bool(self.received)

    def stop_if_received(self) -> None:
        """KeyboardInterrupt(the number) when any rank has received a stop signal."""
        if self.stopping():
            raise KeyboardInterrupt(self.received)

    def describe(self) -> str:
        """"" for SIGINT or none (KeyboardInterrupt raised by Python itself), else " by SIGTERM" and so on."""
        return "" if self.received in (0, signal.SIGINT) else f" by {signal.Signals(self.received).name}"
