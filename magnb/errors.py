"""magnb's error types for problems a user can cause (a bad file, a missing companion, a bad
config, a full disk), and :class:`NothingUsableError` for a stage that ran but produced nothing
to go on with. Everything here is a :class:`MagnbError`, so ``except MagnbError`` catches them all;
the subclasses let a batch tell a bad input (one failure row, the batch goes on) from a problem that
stops it (nothing more can be written)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from os import PathLike

__all__ = ["MagnbError", "NothingUsableError", "nothing_usable"]


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


class NothingUsableError(MagnbError):
    """A stage ran to the end but left nothing the next stage can use: every calculation failed,
    every sample was skipped. ``count`` is how many inputs there were, ``commonest`` the commonest
    reason (one example of it) and ``commonest_count`` how many inputs it stopped. The CLI exits
    with :data:`EXIT_NOTHING_USABLE` on it."""

    def __init__(
        self,
        stage: str,
        what: str,
        count: int,
        commonest: str,
        commonest_count: int,
        path: str | PathLike | None = None,
        verb: str = "rejected",
        listed: str = "",
    ):
        self.stage = stage
        self.count = count
        self.commonest = commonest
        self.commonest_count = commonest_count
        if count == 0:
            message = f"{stage} produced nothing: no {what} to work on"
            if commonest:
                message += f" ({commonest})"
        else:
            message = (
                f"{stage} produced nothing usable: {count} of {count} {what} {verb}; "
                "the commonest reason "
                f"({commonest_count} of {count}): {commonest}"
            )
            if listed:
                message += f" (every reason: {listed})"
        super().__init__(message, path)


#: the exit status of ``magnb`` when a stage produced nothing usable (2: any other MagnbError)
EXIT_NOTHING_USABLE = 3

_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
_LEADING_PATH = re.compile(r"^(?:[^\s:]*[/\\][^\s:]*|[^\s:]+\.(?:h5|parquet|gz|vasp))(?::\d+)?: ")


def _reason_kind(reason: str) -> str:
    """A reason without the file it names and with its numbers blanked: reasons of one kind
    ("slab_window 12.0 A is longer than the cell's c = 6.03 A" in every file) compare equal."""
    text = _LEADING_PATH.sub("", reason.strip())
    text = re.sub(r"^split: ", "", text)
    text = _LEADING_PATH.sub("", text)
    return _NUMBER.sub("#", text)


def nothing_usable(
    stage: str,
    what: str,
    reasons: Sequence[str],
    path: str | PathLike | None = None,
    verb: str = "rejected",
    listed: str = "",
) -> NothingUsableError:
    """The error for a stage whose ``reasons`` (one per rejected input; all of them were rejected)
    leave nothing: counts the reasons by kind (file names and numbers aside) and quotes one
    example of the commonest. ``verb`` says what happened to them (failed, skipped), ``listed``
    where every reason can be read.

    >>> str(nothing_usable("scrape", "samples", ["a.h5: c = 6.0 A too short", "b.h5: c = 2.5 A too short"]))
    'scrape produced nothing usable: 2 of 2 samples rejected; the commonest reason (2 of 2): a.h5: c = 6.0 A too short'
    """
    reasons = [str(r) for r in reasons]
    if not reasons:
        return NothingUsableError(stage, what, 0, "", 0, path, verb, listed)
    kinds = Counter(_reason_kind(r) for r in reasons)
    kind, n = kinds.most_common(1)[0]
    example = next(r for r in reasons if _reason_kind(r) == kind)
    return NothingUsableError(stage, what, len(reasons), example, n, path, verb, listed)
