"""magnb's error types for problems a user can cause (a bad file, a missing companion, a bad
config, a full disk). Everything here is a :class:`MagnbError`, so ``except MagnbError`` catches
them all; the subclasses let a batch tell a bad input (one failure row, the batch goes on) from a
problem that stops it (nothing more can be written)."""

from __future__ import annotations

from os import PathLike


class MagnbError(Exception):
    """A problem with the user's input. The message names the file (and line, where there is one).

    ``path`` and ``line`` are kept as attributes so batch stages can record them in a failure row.
    """

    def __init__(self, message: str, path: str | PathLike | None = None, line: int | None = None):
        self.path = None if path is None else str(path)
        self.line = line
        self.reason = message
        where = ""
        if self.path is not None:
            where = f"{self.path}:{line}: " if line is not None else f"{self.path}: "
        super().__init__(f"{where}{message}")


class ConfigError(MagnbError):
    """A config file or parameter set that cannot be used (a typo, a wrong type, a bad value)."""


class WriteError(MagnbError):
    """An output cannot be written (disk full, quota, I/O error, read-only): the stage stops,
    since no later calculation could be written either. Re-running it after fixing the cause
    finishes the work."""
