"""Interrupting a training run: SIGINT/SIGTERM become a flag the loop checks after each step, and
the run ends with ``Interrupted`` (exit code 130) once the state at that step is saved."""
from __future__ import annotations

import signal

from mammogan_tf.errors import MammoganError


class Interrupted(MammoganError):
    """SIGINT/SIGTERM during training: the state at the current step was saved."""

    exit_code = 130


class StopSignals:
    """Turn SIGINT/SIGTERM into a flag the loop checks after each step (main thread only)."""

    def __init__(self):
        self.received: str | None = None
        self._previous: dict = {}

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, number, frame) -> None:
        if self.received is not None:  # a second signal: stop now
            raise KeyboardInterrupt
        self.received = signal.Signals(number).name

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False
