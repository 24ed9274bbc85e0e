"""Small helpers for the book's chapters: set-up, numbers into the prose, figures.

``glue`` stores a computed value so that the chapter's text can quote it (myst-nb's
``{glue:text}`` role); outside a book build (Colab, plain Jupyter) it does nothing, so a
chapter runs anywhere. It returns nothing, so that a glue as a cell's last line does not
print a stray number under the cell.
"""
from __future__ import annotations

import numpy as np


def plain(value):
    """A numpy scalar as the Python number it holds; anything else unchanged.

    myst-nb formats glued numbers from their ``repr``, and ``repr(np.float64(0.5))`` is
    ``'np.float64(0.5)'`` since numpy 2, which ``{glue:text}`x:.3f``` cannot parse.
    """
    if isinstance(value, np.generic) or (isinstance(value, np.ndarray) and value.ndim == 0):
        return value.item()
    return value


def glue(name: str, value, display: bool = False) -> None:
    """Make ``value`` quotable in the chapter's text as ``{glue:text}`name```."""
    try:
        from myst_nb import glue as _glue
    except ImportError:  # Colab or plain Jupyter: nothing to glue into
        return
    _glue(name, plain(value), display=display)


def describe(profile) -> str:
    """One line saying which profile the numbers below come from."""
    label = {"ci": "CI (a few calls and examples: proves the chapter runs; its numbers mean nothing)",
             "small": "SMALL (2 CPU cores, minutes; fewer calls, shots and prompt tokens than the papers)",
             "colab": "COLAB (a free Colab GPU, sized for at most 15 minutes a chapter; the papers' L, d "
                      "and shots, fewer calls)",
             "full": "FULL (the papers' settings; hours a chapter on a T4)"}.get(profile.name, profile.name)
    return (f"profile: {label}\n  L={profile.prompt_length}, d={profile.intrinsic_dim}, population={profile.popsize}, "
            f"budget={profile.budget} calls, k={profile.k_shot} per class, "
            f"test={'all' if profile.test_size is None else profile.test_size} examples, seeds={list(profile.seeds)}")


def style() -> None:
    """A plain, readable matplotlib style for every figure in the book."""
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.figsize": (7.5, 4.0), "figure.dpi": 110, "axes.grid": True, "grid.alpha": 0.3,
                         "axes.spines.top": False, "axes.spines.right": False, "legend.frameon": False})


def mean_std(values) -> tuple[float, float]:
    """Mean and (population) standard deviation of a list of numbers."""
    v = np.asarray(values, dtype=float)
    return float(v.mean()), float(v.std())
