"""One process at a time per run or output directory.

:class:`DirectoryLock` takes an exclusive ``flock`` on ``DIR/.cikg.lock``. The kernel releases it when the
holder ends, however it ends (``kill -9`` included), so a killed run never leaves a stale lock, and the next
process to lock the directory removes the temporary files a kill left there. The file holds the holder's
PID and host, for the message a second process prints. It is never removed: removing it would let a third
process lock a new file while the second still waits on the old one.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any, Callable, Optional, Tuple, TypeVar

from ._io import PathLike, ensure_dir, remove_stale_temp_files
from .errors import DirectoryInUseError, OutputError, describe_os_error

try:
    import fcntl
except ImportError:  # not POSIX (Windows): no lock, and a warning
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)
LOCK_FILE = ".cikg.lock"
F = TypeVar("F", bound=Callable[..., Any])


class DirectoryLock:
    """An exclusive lock on a directory (created if missing), as a context manager.

    Args:
        directory: the run or output directory.
        what: how messages call it (``"run directory"``, ``"output directory"``).

    Raises (on entering):
        DirectoryInUseError: another process holds it (the message names the directory and that PID).
        OutputError: the directory cannot be created or written.
    """

    def __init__(self, directory: PathLike, what: str = "output directory"):
        self.directory = Path(directory)
        self.what = what
        self._fd: Optional[int] = None
        self._created = False

    def __repr__(self) -> str:
        return f"DirectoryLock('{self.directory}', what={self.what!r}, held={self.held})"

    @property
    def held(self) -> bool:
        return self._fd is not None

    @property
    def path(self) -> Path:
        return self.directory / LOCK_FILE

    def acquire(self) -> "DirectoryLock":
        """Take the lock or raise; then remove the temporary files a killed process left in the directory."""
        if self._fd is not None:
            return self
        self._created = not os.path.isdir(self.directory)
        ensure_dir(self.directory)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as err:
            raise OutputError(f"cannot write: {describe_os_error(err)}", self.directory) from None
        if fcntl is None:
            os.close(fd)
            log.warning("%s: no file locks on this platform; make sure no other process uses it", self.directory)
            return self
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid, host = _holder(fd)
            os.close(fd)
            raise DirectoryInUseError(self.directory, self.what, pid, host) from None
        except OSError as err:  # a file system without locks (some network mounts): go on, unprotected
            os.close(fd)
            log.warning("%s: cannot lock (%s); make sure no other process uses it", self.directory,
                        describe_os_error(err))
            return self
        self._fd = fd
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        except OSError as err:  # a full disk or quota
            self.release()
            raise OutputError(f"cannot write: {describe_os_error(err)}", self.path) from None
        remove_stale_temp_files(self.directory)
        return self

    def release(self) -> None:
        """Let the lock go (closing the file releases it); a directory it created and nothing else was written
        into (a command that failed on its input) is removed again."""
        if self._fd is None:
            return
        if self._created and os.listdir(self.directory) == [LOCK_FILE]:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
                os.rmdir(self.directory)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "DirectoryLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _holder(fd: int, wait_s: float = 1.0) -> Tuple[Optional[int], Optional[str]]:
    """The PID and host in a lock file; the holder writes them just after locking, so wait a moment for them."""
    deadline = time.monotonic() + wait_s
    while True:
        fields = os.pread(fd, 512, 0).decode("utf-8", errors="replace").split()
        if fields and fields[0].isdigit():
            return int(fields[0]), (fields[1] if len(fields) > 1 else None)
        if time.monotonic() > deadline:
            return None, None
        time.sleep(0.02)


def holding_lock(directory_of: Callable[[Any], Optional[PathLike]], what: str = "output directory") -> Callable[[F], F]:
    """Decorator: call the function holding the :class:`DirectoryLock` of ``directory_of(first argument)``.

    ``directory_of`` returning ``None`` means no lock (a directory the function will report as missing, a
    rank that writes nothing).
    """

    def decorate(function: F) -> F:
        @functools.wraps(function)
        def locked(first: Any, *args: Any, **kwargs: Any) -> Any:
            directory = directory_of(first)
            if directory is None:
                return function(first, *args, **kwargs)
            with DirectoryLock(directory, what):
                return function(first, *args, **kwargs)

        return locked  # type: ignore[return-value]

    return decorate


__all__ = ["LOCK_FILE", "DirectoryLock", "holding_lock"]
