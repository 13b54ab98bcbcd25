"""``python -P cikg/llm/_llama_main.py [--cikg-parent-pid PID] [--cikg-extra-buffers] ARGS`` (or ``python -m
cikg.llm._llama_main ...``): ``python -m llama_cpp.server ARGS`` tied to the process that started it, with
llama.cpp's extra CPU buffer types (AMX / weight repacking) switched off unless ``--cikg-extra-buffers`` is
given. It imports nothing of cikg, so that the server does not load torch.

Tied: a thread watches the parent PID; once the parent is gone (killed with SIGKILL, say, so that it could
not stop us) the server sends itself SIGTERM (uvicorn's graceful stop) and exits hard if that takes longer
than a few seconds. It watches the PID rather than using ``PR_SET_PDEATHSIG``, which fires when the
*thread* that started the child ends, not the process.

Extra buffers: on this project's machines (Xeon with AMX, llama-cpp-python 0.3.36 built natively) any
prompt longer than one token crashes the server with a segmentation fault inside those kernels; with
``use_extra_bufts=False`` the model runs correctly. Everything else is the stock server.
"""
from __future__ import annotations

import os
import runpy
import signal
import sys
import threading
import time
from typing import List, Optional, Tuple

PARENT_POLL_S = 0.5
STOP_GRACE_S = 5.0


def _disable_extra_buffer_types() -> None:
    import llama_cpp.llama_cpp as low_level

    original = low_level.llama_model_default_params

    def params():  # type: ignore[no-untyped-def]
        value = original()
        value.use_extra_bufts = False
        return value

    low_level.llama_model_default_params = params


def _watch_parent(parent: int) -> None:
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(STOP_GRACE_S)
        os._exit(1)

    threading.Thread(target=watch, name="cikg-parent-watch", daemon=True).start()


def _own_options(argv: List[str]) -> Tuple[Optional[int], bool, List[str]]:
    """(parent PID, keep extra buffers, the arguments left for llama_cpp.server)."""
    parent, extra, rest = None, False, []
    words = iter(argv)
    for word in words:
        if word == "--cikg-parent-pid":
            parent = int(next(words))
        elif word == "--cikg-extra-buffers":
            extra = True
        else:
            rest.append(word)
    return parent, extra, rest


if __name__ == "__main__":
    parent_pid, extra_buffers, sys.argv[1:] = _own_options(sys.argv[1:])
    if parent_pid is not None:
        _watch_parent(parent_pid)
    if not extra_buffers:
        _disable_extra_buffer_types()
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
