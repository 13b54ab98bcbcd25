"""One exception family for everything a user can get wrong or the world can break.

Every error carries enough context (file, line, field, user, item, key) for a one-line message that a
shell user can act on; the CLI prints ``str(err)`` and exits with status 2.
"""
from __future__ import annotations

from os import PathLike
from typing import Optional, Union

PathType = Union[str, "PathLike[str]"]


class CikgError(Exception):
    """Base class of every error cikg raises on purpose."""


class DatasetError(CikgError):
    """A dataset file is missing, malformed or inconsistent.

    Args:
        message: what is wrong, in words.
        path: the file concerned, when there is one.
        line: the 1-based line number inside ``path``, when known.
    """

    def __init__(self, message: str, path: Optional[PathType] = None, line: Optional[int] = None):
        self.message = message
        self.path = None if path is None else str(path)
        self.line = line
        where = ""
        if self.path is not None:
            where = self.path if line is None else f"{self.path}:{line}"
            where += ": "
        super().__init__(where + message)


class ConfigError(CikgError):
    """A configuration key is unknown, has the wrong type or an out-of-range value."""

    def __init__(self, message: str, key: Optional[str] = None):
        self.key = key
        super().__init__(f"config key {key!r}: {message}" if key else message)


class GraphError(CikgError):
    """A graph artifact is missing, inconsistent with its dataset, or of the wrong version."""


class LLMError(CikgError):
    """An LLM request failed for good (after retries) or its answer could not be used."""


class OutputError(CikgError):
    """An output file, directory or cache cannot be written (read-only location, disk full, ...).

    Raised before anything is replaced: the previous version of the file, or the cache's committed rows,
    are left as they were.
    """

    def __init__(self, message: str, path: Optional[PathType] = None):
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {message}" if self.path is not None else message)


class DirectoryInUseError(OutputError):
    """Another process holds the lock of a run or output directory (:class:`cikg._lock.DirectoryLock`).

    Attributes:
        path: the directory.
        pid: the holder's process id (``None`` when its lock file names none).
        host: the holder's host name, as it wrote it.
    """

    def __init__(self, directory: PathType, what: str, pid: Optional[int] = None, host: Optional[str] = None):
        import socket

        self.pid, self.host = pid, host
        holder = "another process" if pid is None else f"process {pid}"
        if host and host != socket.gethostname():
            holder += f" on host {host}"
        super().__init__(f"{what} in use by {holder}; wait for it to end or choose another directory", directory)


def describe_os_error(err: OSError) -> str:
    """``"No space left on device (ENOSPC)"`` for an :class:`OSError` (or its message when it has no errno)."""
    import errno

    name = errno.errorcode.get(err.errno or -1)
    text = err.strerror or str(err)
    return f"{text} ({name})" if name else text


def describe_path_error(err: OSError) -> str:
    """``"runs/x.yaml: Is a directory (EISDIR)"``: the path(s) of an :class:`OSError` and the OS reason."""
    paths = [str(p) for p in (err.filename, err.filename2) if p is not None]
    return ": ".join(paths + [describe_os_error(err)])


class DivergedError(CikgError):
    """Training produced non-finite values (a NaN or infinite loss, NaN scores): the settings diverge. A study
    (:mod:`cikg.train.tune`) records such a trial as failed and goes on."""


class CheckpointError(CikgError):
    """A checkpoint or run directory is missing, incomplete or does not match the configuration."""
