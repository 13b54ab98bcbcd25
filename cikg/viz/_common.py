"""What every cikg plot shares: saving, integer epoch ticks and the selected-epoch marker."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from matplotlib.ticker import MaxNLocator

PathLike = Union[str, Path]
SELECTED_STYLE = dict(color="0.35", linestyle=":", linewidth=1.2)


def finish(fig, path: Optional[PathLike], layout: bool = True):
    """Lay the figure out (unless the caller placed artists in pixels already) and write it when asked."""
    if layout:
        fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    return fig


def epoch_axis(ax, label: str = "epoch") -> None:
    """Epochs are whole numbers: no ``2.5`` tick, whatever the number of epochs."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(label)


def mark_selected_epoch(ax, epoch: Optional[int]):
    """A dotted vertical line at the epoch selected on validation (nothing when ``epoch`` is unknown)."""
    if not epoch:
        return None
    return ax.axvline(int(epoch), label=f"selected on valid (epoch {int(epoch)})", **SELECTED_STYLE)


def thousands(n) -> str:
    return f"{int(n):,}"
