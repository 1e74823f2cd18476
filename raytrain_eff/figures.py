"""Matplotlib without a display, and a figure as PNG bytes: the plots of a comparison report
(``report/plots.py``) and of a sweep (``tune/plots.py``) both draw through these."""

from __future__ import annotations

import io


def pyplot():
    """matplotlib.pyplot on the Agg backend (imported on first use: plotting is optional)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png(fig) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    pyplot().close(fig)
    return buf.getvalue()
