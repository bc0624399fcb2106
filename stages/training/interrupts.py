"""Ctrl-C during training, deferred to a step boundary so the checkpoint written then is consistent."""

from __future__ import annotations

import signal
import threading
from typing import Any


class DeferredInterrupt:
    """Ctrl-C during training is deferred to the end of the current step (so a checkpoint is
    consistent); a second Ctrl-C interrupts at once. Only in the main thread."""

    def __init__(self) -> None:
        self.requested = False
        self._old: Any = None

    def __enter__(self) -> DeferredInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        from gdr_cli.console import console

        console.print("interrupt: saving a checkpoint after this step (Ctrl-C again to stop at once)", markup=False)

    def __exit__(self, *exc: Any) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
