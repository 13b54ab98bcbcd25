"""Small file helpers shared by every layer: atomic writes, so a kill never leaves half a file."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, List, Union

PathLike = Union[str, "os.PathLike[str]"]


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path`` (atomic on POSIX).

    On an exception the temporary file is removed and ``path`` is left as it was.

    Raises:
        OutputError: the directory is read-only, the disk is full, ... (an :class:`OSError` while writing);
            ``path`` is unchanged and no temporary file is left.
    """
    from .errors import OutputError, describe_os_error

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as err:
        raise OutputError(f"cannot write: {describe_os_error(err)}", path) from err
    tmp_path = Path(tmp)
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


def ensure_dir(path: PathLike) -> Path:
    """``mkdir -p path``; :class:`~cikg.errors.OutputError` (naming it) when that is not possible."""
    from .errors import OutputError, describe_os_error

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
    from .errors import DatasetError

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


def torch_save_atomic(obj: Any, path: PathLike) -> None:
    """``torch.save`` to ``path`` atomically."""
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(obj, fh)  # through a Python file, so a full disk raises OSError (a path gives RuntimeError)
