"""The file protocol every stage shares: atomic writes, multi-file publishing, one writer per
stage and folder, content hashes, and the fault points the reliability tests use.

How an output is published:

- every file is written under a temporary name beside its final one (``.<name>.tmp-*``) and
  renamed into place after an fsync, so a killed process leaves the old file or the new one;
- an output made of several files (a data folder's raw copies and manifest, split files and their
  index, a dataset and its table) is written inside :func:`stage_writer`, which holds the stage's
  lock and an ``.<stage>.incomplete`` marker for as long as the output is being changed. A reader
  calls :func:`check_complete` and refuses a folder whose marker is there (an interrupted run, or
  one running now). A dataset's two files also share a build id (:func:`new_build_id`), checked
  when they are read together;
- user-caused OS errors (a full disk, a permission, a name too long) become a :class:`WriteError`
  or :class:`MagnbError` naming the file (:func:`os_error`).

Fault injection (tests only): with ``MAGNB_FAULT=kill@K`` the process SIGKILLs itself at the K-th
fault point it reaches; ``enospc@K`` / ``eio@K`` make the K-th point that is a write raise that
OSError instead. ``MAGNB_FAULT_LOG=FILE`` appends one line per point (``k kind path``), which is
how the tests enumerate them. Unset, :func:`fault_point` does nothing.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import os
import re
import signal
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from magnb.errors import MagnbError, WriteError

FAULT_ENV = "MAGNB_FAULT"
FAULT_LOG_ENV = "MAGNB_FAULT_LOG"
#: the fault points that stand for a write (they can fail with ENOSPC or EIO); "rename" and
#: "remove" points are where a kill is injected after a publish step
WRITE_POINTS = ("write", "flush")
_fault_count = 0


def fault_point(kind: str, path: str | Path) -> None:
    """A publish step (``write``, ``flush``, ``rename``, ``remove``) of ``path``; see the module
    docstring. Does nothing unless ``MAGNB_FAULT`` or ``MAGNB_FAULT_LOG`` is set."""
    spec = os.environ.get(FAULT_ENV)
    log = os.environ.get(FAULT_LOG_ENV)
    if not spec and not log:
        return
    global _fault_count
    _fault_count += 1
    if log:
        with open(log, "a") as fh:
            fh.write(f"{_fault_count}\t{kind}\t{path}\n")
    if not spec:
        return
    action, _, at = spec.partition("@")
    if int(at) != _fault_count:
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif kind in WRITE_POINTS and action in ("enospc", "eio"):
        code = errno.ENOSPC if action == "enospc" else errno.EIO
        raise OSError(code, os.strerror(code), str(path))


def reset_faults() -> None:
    """Restart the fault-point count (for tests that inject faults in their own process)."""
    global _fault_count
    _fault_count = 0


# --------------------------------------------------------------------------------------------
# errors

#: OS errors a user's environment causes, and how a message says them
_USER_ERRNOS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EIO: "input/output error (a failing disk or network file system?)",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENAMETOOLONG: "file name too long",
    errno.ELOOP: "too many levels of symbolic links (a symlink loop?)",
}
#: the ones that are about the output side: a stage stops (the rest of the batch cannot be
#: written either) instead of recording a failure row
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS}


def errno_of(exc: BaseException) -> int | None:
    """The errno of an OSError, or of an HDF5 error that carries one in its text (h5py raises
    ``RuntimeError: ... errno = 28, error message = 'No space left on device'`` when a write
    fails as it closes a file)."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return exc.errno
    if isinstance(exc, OSError | RuntimeError):
        found = re.search(r"errno = (\d+)", str(exc))
        if found:
            return int(found.group(1))
    return None


def os_error(
    exc: BaseException, path: str | Path | None = None, doing: str = "", writing: bool = False
) -> MagnbError:
    """A user-caused OSError as a one-line MagnbError naming the file (a :class:`WriteError`
    when it means nothing more can be written, or it happened ``writing`` an output); any other
    exception is returned unchanged."""
    code = errno_of(exc)
    what = _USER_ERRNOS.get(code) if code is not None else None
    if what is None:
        return exc  # type: ignore[return-value]
    where = path if path is not None else (getattr(exc, "filename", None) or None)
    text = f"{doing}: {what}" if doing else what
    cls = WriteError if writing or code in _WRITE_ERRNOS else MagnbError
    return cls(text, where)


@contextlib.contextmanager
def user_os_errors(
    doing: str = "", path: str | Path | None = None, writing: bool = False
) -> Iterator[None]:
    """Turn user-caused OSErrors raised in the block into MagnbErrors (see :func:`os_error`)."""
    try:
        yield
    except (OSError, RuntimeError) as exc:
        converted = os_error(exc, path, doing, writing)
        if converted is exc:
            raise
        raise converted from exc


def ensure_space(path: str | Path, nbytes: int, margin: int = 1 << 20) -> None:
    """WriteError naming ``path`` unless its file system has ``nbytes`` (+ ``margin``) free.

    HDF5 does not always fail cleanly when a write hits a full disk (h5py can raise from inside
    a close, and a later use of the library then crashes): stages that stream into an HDF5 file
    check before each write instead of finding out from the library.
    """
    path = Path(path)
    try:
        st = os.statvfs(path.parent if not path.is_dir() else path)
    except OSError:
        return  # cannot tell: the write itself will say
    free = st.f_bavail * st.f_frsize
    if free < nbytes + margin:
        raise WriteError(
            f"no space left on the device: {nbytes + margin} more bytes needed, {free} free",
            path,
        )


# --------------------------------------------------------------------------------------------
# atomic files


@functools.cache
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temp_prefix(path: str | Path) -> str:
    """The prefix of ``path``'s temporary files. Names are cut so that a legal 255-byte name
    still leaves room for the suffix (the final name is whatever the caller asked for)."""
    name = Path(path).name
    if len(name.encode()) > 180:
        name = name.encode()[:160].decode(errors="ignore") + "~" + sha256_text(name)[:8]
    return f".{name}.tmp-"


def is_temporary(path: str | Path) -> bool:
    """Whether ``path`` is one of magnb's temporary files (``.<name>.tmp-*``)."""
    name = Path(path).name
    return name.startswith(".") and ".tmp-" in name


def _new_temp(path: Path, suffix: str = "") -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=suffix, dir=path.parent)
    os.close(fd)
    return tmp


def _publish(tmp: str | Path, path: Path) -> None:
    """fsync, give the temporary file ordinary permissions (mkstemp makes it 0600), rename."""
    fault_point("flush", path)
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)
    fault_point("rename", path)


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Write to a temporary file beside ``path`` and rename it into place on success.

    A killed process leaves either the old file or the new one, never half of one (the temporary
    file is removed on error, and by the next run of the stage after a kill).
    """
    with atomic_path(path) as tmp, open(tmp, mode) as fh:
        yield fh


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Like :func:`atomic_write` for libraries that want a path (h5py, pyarrow): yields a temporary
    path beside ``path`` and renames it into place when the block succeeds. ``suffix`` ends the
    temporary name, for writers that insist on one (Keras wants ``.keras``)."""
    path = Path(path)
    with user_os_errors("cannot write", path, writing=True):
        tmp = _new_temp(path, suffix)
    try:
        fault_point("write", path)
        yield Path(tmp)
        _publish(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        # name the file the user asked for, not the temporary
        converted = os_error(exc, path, "cannot write", writing=True)
        if converted is not exc:
            raise converted from exc
        raise


def link_into_place(src: Path, path: Path) -> None:
    """Hard-link ``src`` at ``path`` atomically (OSError when the file systems differ)."""
    with user_os_errors("cannot write", path, writing=True):
        tmp = _new_temp(path)
        os.unlink(tmp)
    try:
        fault_point("write", path)
        os.link(src, tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS:
            raise os_error(exc, path, "cannot write", writing=True) from exc
        raise  # EXDEV and the like: the caller copies instead
    fault_point("rename", path)


def remove(path: str | Path) -> None:
    """Remove a file (a publish step: the fault tests kill right after it)."""
    path = Path(path)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
        fault_point("remove", path)


def remove_temporaries(folder: str | Path, recursive: bool = False) -> int:
    """Remove the temporary files a killed run left in ``folder``; only call where no other
    writer can be writing there (:func:`stage_writer` checks that first: the shards of one
    build each hold their own stage lock on the same folder). Returns how many were removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    n = 0
    for p in folder.glob("**/.*.tmp-*" if recursive else ".*.tmp-*"):
        if p.is_file() or p.is_symlink():
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                n += 1
    return n


# --------------------------------------------------------------------------------------------
# multi-file outputs: one writer per stage and folder, and a marker while it writes


def marker_path(folder: str | Path, stage: str) -> Path:
    return Path(folder) / f".{stage}.incomplete"


def lock_path(folder: str | Path, stage: str) -> Path:
    return Path(folder) / f".{stage}.lock"


@contextlib.contextmanager
def stage_lock(folder: str | Path, stage: str) -> Iterator[None]:
    """Hold the lock of ``stage`` on ``folder``; a second writer gets a MagnbError at once.

    filelock's flock-based lock is released by the kernel when its holder dies, so a killed run
    never leaves a stale lock behind.
    """
    from filelock import FileLock, Timeout

    folder = Path(folder)
    with user_os_errors(f"cannot create the lock of magnb {stage}", folder):
        folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_path(folder, stage)), thread_local=False)
    try:
        with user_os_errors(f"cannot take the lock of magnb {stage}", lock_path(folder, stage)):
            lock.acquire(timeout=0)
    except Timeout:
        raise MagnbError(
            f"another magnb {stage} is writing to this folder now; wait for it to finish "
            "(one writer per stage and folder)",
            folder,
        ) from None
    try:
        yield
    finally:
        lock.release()


def writers_lock_path(folder: str | Path) -> Path:
    return Path(folder) / ".writers.lock"


@contextlib.contextmanager
def folder_writer(folder: str | Path) -> Iterator[bool]:
    """Be one of the writers of ``folder`` (a shared ``flock`` on its ``.writers.lock``) until
    the block ends; yields whether this one found itself alone, in which case the temporary
    files left in ``folder`` were a killed run's and have been removed (under an exclusive lock
    that no writer can join meanwhile). With other writers there (the other shards of a Slurm
    array, or another stage writing into the same folder), the temporaries may be theirs, in
    flight, and are left for a later lone writer. The kernel drops a killed writer's lock."""
    folder = Path(folder)
    try:
        import fcntl
    except ImportError:  # not POSIX: never remove what may be another writer's
        yield False
        return
    path = writers_lock_path(folder)
    with user_os_errors("cannot open the writers' lock of this folder", path):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            alone = False
        else:
            alone = True
            remove_temporaries(folder)
        fcntl.flock(fd, fcntl.LOCK_SH)  # from exclusive: a conversion; else waits for a cleanup
        yield alone
    finally:
        os.close(fd)


@contextlib.contextmanager
def stage_writer(folder: str | Path, stage: str) -> Iterator[None]:
    """Change a multi-file output of ``stage`` in ``folder``: under the stage's lock, with the
    ``.<stage>.incomplete`` marker in place until the block finishes without error. Temporary
    files a killed run left in ``folder`` are removed first when no other writer is in the
    folder (:func:`folder_writer`)."""
    folder = Path(folder)
    with stage_lock(folder, stage), folder_writer(folder):
        marker = marker_path(folder, stage)
        if not marker.is_file():
            with user_os_errors(f"cannot start magnb {stage}", marker):
                with atomic_write(marker, "w") as fh:
                    fh.write(f"magnb {stage} is writing this folder (or was interrupted)\n")
        yield
        with user_os_errors(f"cannot finish magnb {stage}", marker):
            remove(marker)


def check_complete(folder: str | Path, stage: str, command: str) -> None:
    """MagnbError when ``stage``'s output in ``folder`` is being written or was interrupted."""
    marker = marker_path(folder, stage)
    if marker.is_file():
        raise MagnbError(
            f"the output of magnb {stage} here is incomplete (a run was interrupted or is "
            f"running now): run `{command}` again and wait for it to finish",
            marker,
        )


def new_build_id() -> str:
    """A fresh id shared by the files of one build (checked when they are read together)."""
    return uuid.uuid4().hex


# --------------------------------------------------------------------------------------------
# hashes and attributes


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes (as stored: a .gz file hashes compressed)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def h5_attr(path: str | Path, name: str) -> str | None:
    """An attribute of an HDF5 file as text, or None when the file is missing or unreadable
    (how stages find the input hash of what they wrote before)."""
    import h5py

    path = Path(path)
    if not path.is_file():
        return None
    try:
        with h5py.File(path, "r") as f:
            return str(f.attrs.get(name, ""))
    except OSError:
        return None
