"""magnb's one error type for problems a user can cause (a bad file, a missing companion, a bad config)."""

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
