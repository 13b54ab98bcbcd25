"""``python -m cikg.llm._llama_main ARGS``: ``python -m llama_cpp.server ARGS`` with llama.cpp's extra CPU
buffer types (AMX / weight repacking) switched off.

On this project's machines (Xeon with AMX, llama-cpp-python 0.3.36 built natively) any prompt longer than
one token crashes the server with a segmentation fault inside those kernels; with ``use_extra_bufts=False``
the model runs correctly. Everything else is the stock server.
"""
from __future__ import annotations

import runpy


def _disable_extra_buffer_types() -> None:
    import llama_cpp.llama_cpp as low_level

    original = low_level.llama_model_default_params

    def params():  # type: ignore[no-untyped-def]
        value = original()
        value.use_extra_bufts = False
        return value

    low_level.llama_model_default_params = params


if __name__ == "__main__":
    _disable_extra_buffer_types()
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
