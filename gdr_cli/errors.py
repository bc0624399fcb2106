"""User-facing errors: one clear line saying what is wrong, where, and what to do."""

from __future__ import annotations


class GdrError(Exception):
    """An error caused by the user's input or environment, never a bug.

    The CLI prints `error: <what> (<where>) — <fix>` on one line and exits with `exit_code`.
    """

    def __init__(self, what: str, *, where: str | None = None, fix: str | None = None, exit_code: int = 2):
        super().__init__(what)
        self.what = what
        self.where = where
        self.fix = fix
        self.exit_code = exit_code

    def line(self) -> str:
        text = f"error: {self.what}"
        if self.where:
            text += f" ({self.where})"
        if self.fix:
            text += f" — {self.fix}"
        return " ".join(text.split())


class StaleInputError(GdrError):
    """An upstream artifact changed after the artifact that consumes it was built."""
