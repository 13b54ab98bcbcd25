"""Small file helpers shared by every layer: atomic writes, so a kill never leaves half a file."""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import secrets
from pathlib import Path
from typing import Any, Iterable, Iterator, List, Union

from .errors import DatasetError, OutputError, describe_os_error

PathLike = Union[str, "os.PathLike[str]"]
log = logging.getLogger(__name__)

# ".cikg-<12 hex>.tmp": as long whatever the target's name, so a target of 255 characters (the usual limit) fits
_TEMP_NAME = re.compile(r"^\.cikg-[0-9a-f]{12}\.tmp$")
# what atomic_path named them before (tempfile.mkstemp's ".<target>.<8 characters>.tmp"), left by killed runs
_OLD_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path`` (atomic on POSIX).

    On an exception the temporary file is removed and ``path`` is left as it was.

    Raises:
        OutputError: the directory is read-only, the disk is full, ... (an :class:`OSError` while writing);
            ``path`` is unchanged and no temporary file is left.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp_path = _new_temp_file(path.parent)
    except OSError as err:
        raise OutputError(f"cannot write: {describe_os_error(err)}", path) from err
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except OSError as err:
        raise OutputError(f"cannot write: {describe_os_error(err)}; the previous file, if any, is unchanged",
                          path) from err
    finally:
        if tmp_path.exists():
            with contextlib.suppress(OSError):
                tmp_path.unlink()


def _new_temp_file(directory: Path) -> Path:
    """A new empty ``.cikg-<12 hex>.tmp`` in ``directory``, of mode ``0o666 & ~umask`` like any tool's files
    (``tempfile.mkstemp`` makes 0600, which the rename would carry onto the artifact)."""
    for _ in range(100):
        tmp = directory / f".cikg-{secrets.token_hex(6)}.tmp"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(errno.EEXIST, "no free temporary file name", str(directory))


def remove_stale_temp_files(directory: PathLike) -> List[Path]:
    """Remove the temporary files :func:`atomic_path` left in ``directory`` when a process was killed mid-write.

    Only files named as :func:`atomic_path` names them (now or before); call it only while holding the
    directory's lock (:class:`cikg._lock.DirectoryLock`), so that no live writer's file is removed.
    """
    removed = []
    with os.scandir(directory) as entries:
        for entry in entries:
            if (_TEMP_NAME.match(entry.name) or _OLD_TEMP_NAME.match(entry.name)) and entry.is_file(
                    follow_symlinks=False):
                try:
                    os.unlink(entry.path)
                except OSError:  # gone already, or a folder we may not change: the next write fails clearly
                    continue
                removed.append(Path(entry.path))
    if removed:
        log.info("removed %d temporary file(s) a killed run left in %s", len(removed), directory)
    return removed


def sha256_file(path: PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def ensure_dir(path: PathLike) -> Path:
    """``mkdir -p path``; :class:`~cikg.errors.OutputError` (naming it) when that is not possible."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot write: {describe_os_error(err)}", path) from None
    return path


def read_utf8_lines(path: PathLike) -> List[str]:
    """The lines of a UTF-8 text file (split at line feeds; a carriage return before one is kept).

    Raises:
        DatasetError: the file is missing or unreadable, or not UTF-8 (naming the line of the first bad byte).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError("file not found", path) from None
    except OSError as err:
        raise DatasetError(f"cannot read file: {err.strerror}", path) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DatasetError("file is not valid UTF-8", path, raw[: err.start].count(b"\n") + 1) from None
    return text.split("\n")


def write_text_atomic(path: PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_jsonl_atomic(path: PathLike, records: Iterable[Any]) -> None:
    """Write one JSON object per line (UTF-8, not escaped) to ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")


def torch_save_atomic(obj: Any, path: PathLike) -> None:
    """``torch.save`` to ``path`` atomically."""
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(obj, fh)  # through a Python file, so a full disk raises OSError (a path gives RuntimeError)
