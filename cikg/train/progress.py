"""The trainer's epoch progress bar: a terminal bar, a widget in Jupyter, nothing in logs and pipes."""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

from tqdm.auto import tqdm


def bar_disable(show: bool) -> Optional[bool]:
    """tqdm's ``disable``: ``None`` (shown on a terminal, hidden in logs and pipes) unless ``show`` is false.
    In Jupyter, ``tqdm.auto`` draws an ipywidgets bar whatever the output stream is."""
    return None if show else True


def epoch_bar(total: int, done: int, desc: str, show: bool) -> tqdm:
    """A bar over the epochs of a run that starts at the ``done`` epochs of a resumed run."""
    return tqdm(total=total, initial=done, desc=desc, unit="epoch", leave=True, dynamic_ncols=True,
                disable=bar_disable(show))


def epoch_postfix(record: Dict[str, Any], select: Sequence[str], best_epoch: int) -> Dict[str, str]:
    """What the bar shows after an epoch: the loss, the selection metrics of the last validation, the best epoch."""
    shown = {"loss": f"{record['loss']:.4f}"} if "loss" in record else {}
    for name in select:
        if f"valid_{name}" in record:
            shown[name] = f"{record[f'valid_{name}']:.4f}"
    shown["best"] = str(best_epoch)
    return shown
