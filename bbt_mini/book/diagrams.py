"""The book's diagrams: boxes, arrows and grids drawn with matplotlib, no data.

Each function draws one picture a chapter shows and returns the
:class:`matplotlib.figure.Figure`, built without pyplot so that it is never shown twice;
:func:`show` puts it in a notebook as a PNG. Every box's label is a text artist of the
figure's axes, which is what the tests read back.
"""
from __future__ import annotations

import io

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

BOX = dict(boxstyle="round,pad=0.02,rounding_size=0.02", linewidth=1.2)


def show(fig: Figure, dpi: int = 110) -> None:
    """Display ``fig`` in a notebook as one PNG image (whether or not pyplot's inline backend is active)."""
    from IPython.display import Image, display

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    display(Image(data=buffer.getvalue(), format="png"))


def _canvas(width: float, height: float, xlim=(0, 1), ylim=(0, 1)):
    """A figure with one frameless axes whose data coordinates are the drawing's."""
    fig = Figure(figsize=(width, height), layout="constrained")
    ax = fig.add_subplot()
    ax.set(xlim=xlim, ylim=ylim)
    ax.set_axis_off()
    return fig, ax


def _box(ax, x, y, w, h, label, colour="0.93", size=10):
    """A rounded box centred at (x, y) with ``label`` in it."""
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, facecolor=colour, edgecolor="0.3", **BOX))
    ax.text(x, y, label, ha="center", va="center", fontsize=size)


def _arrow(ax, start, end, label=None, rad=0.0, colour="0.25", dy=0.04):
    """An arrow from ``start`` to ``end``, with an optional label ``dy`` above its middle."""
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=12, color=colour,
                                 linewidth=1.2, connectionstyle=f"arc3,rad={rad}"))
    if label:
        mid = ((start[0] + end[0]) / 2, (start[1] + end[1]) / 2)
        ax.text(mid[0], mid[1] + dy, label, ha="center", va="bottom", fontsize=8, color=colour)


def pipeline() -> Figure:
    """BBT's loop: ``z -> A z + p0 -> [prompt; input] -> model -> label-word logits -> loss -> CMA-ES -> z``.

    The top row is what the user computes, the model the provider's; the arrow back from
    CMA-ES to ``z`` closes the loop once per generation.
    """
    fig, ax = _canvas(10, 3.2)
    steps = [("$z \\in \\mathbb{R}^d$", "#dbe9f6"), ("$A z + p_0$", "#dbe9f6"),
             ("[prompt;\ninput]", "#dbe9f6"), ("model", "#f6dede"),
             ("label-word\nlogits", "#f6dede"), ("loss", "#dbe9f6"), ("CMA-ES", "#dbe9f6")]
    xs = np.linspace(0.07, 0.93, len(steps))
    for x, (label, colour) in zip(xs, steps):
        _box(ax, x, 0.6, 0.095, 0.22, label, colour, size=9)
    notes = ["project", "embed", "one API call", "read", "score", "rank"]
    for a, b, note in zip(xs[:-1], xs[1:], notes):
        _arrow(ax, (a + 0.05, 0.6), (b - 0.05, 0.6), note, dy=0.14)
    _arrow(ax, (xs[-1], 0.49), (xs[0], 0.49), rad=-0.25)
    ax.text(0.5, 0.12, "next generation: CMA-ES proposes new $z$", ha="center", fontsize=9)
    ax.text((xs[3] + xs[4]) / 2, 0.9, "the provider (black box)", ha="center", fontsize=9, color="#a03030")
    ax.set_title("BBT: one generation of the search", fontsize=11)
    return fig


def deep_prompt(layers: int = 4, prompt_length: int = 3, text_length: int = 4) -> Figure:
    """BBTv2's deep prompt: ``A_l z_l`` added at the prompt positions of the hidden states entering layer ``l``.

    Columns are positions (the prompt's ``L`` first, then the sentence), rows the states
    entering each layer from the bottom; layer 0's vector is ``A_0 z_0 + p_0``, the input prompt.
    """
    width = prompt_length + text_length
    fig, ax = _canvas(8, 1.1 * layers + 1.2, xlim=(-3.2, width + 0.5), ylim=(-0.9, layers + 0.2))
    for y in range(layers):
        for pos in range(width):
            prompt = pos < prompt_length
            ax.add_patch(FancyBboxPatch((pos + 0.1, y + 0.15), 0.8, 0.5, facecolor="#cfe3c8" if prompt else "0.9",
                                        edgecolor="0.4", **BOX))
        ax.text(-0.2, y + 0.4, f"entering layer {y}", ha="right", va="center", fontsize=9)
        added = "$A_0 z_0 + p_0$" if y == 0 else f"$+A_{{{y}}} z_{{{y}}}$"
        ax.text(prompt_length / 2, y + 0.4, added, ha="center", va="center", fontsize=9)
        if y + 1 < layers:
            _arrow(ax, (width / 2 + 1, y + 0.68), (width / 2 + 1, y + 1.12))
            ax.text(width / 2 + 1.15, y + 0.9, f"layer {y}", fontsize=8, va="center")
    ax.text(prompt_length / 2, -0.5, f"prompt positions ($L$ = {prompt_length})", ha="center", fontsize=9)
    ax.text(prompt_length + text_length / 2, -0.5, "the sentence", ha="center", fontsize=9)
    ax.set_title("BBTv2: a prompt added at every layer", fontsize=11)
    return fig


def schedule(layers: int, popsize: int, rounds: int) -> Figure:
    """Divide and conquer as a map of layers (rows) against API calls (columns).

    Each generation spends ``popsize`` calls on one layer; a round visits every layer from
    the bottom up, so a run of ``rounds`` rounds is ``rounds * layers * popsize`` calls.
    """
    generations = layers * rounds
    grid = np.full((layers, generations), np.nan)
    for g in range(generations):
        grid[g % layers, g] = g // layers + 1  # the round that gives this layer its generation
    fig = Figure(figsize=(8, 3.6), layout="constrained")
    ax = fig.add_subplot()
    extent = (0, generations * popsize, -0.5, layers - 0.5)
    image = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis", extent=extent,
                      interpolation="nearest", vmin=1, vmax=max(rounds, 2))
    ax.set(xlabel="API calls", ylabel="layer whose $z_\\ell$ is searched",
           title=f"divide and conquer: {rounds} round(s) x {layers} layers x {popsize} calls")
    if rounds > 1:
        fig.colorbar(image, ax=ax, label="round")
    return fig


def moment_matching() -> Figure:
    """BBTv2's normal sampler: each ``A_l`` is scaled so that ``A_l z`` has the spread of what it is added to."""
    fig, ax = _canvas(10, 2.6)
    _box(ax, 0.1, 0.55, 0.15, 0.3, "$z \\sim \\mathcal{N}(0, \\sigma_0^2 I)$\nCMA-ES's first\npopulation")
    _box(ax, 0.38, 0.55, 0.2, 0.3, "$A_\\ell$, entries\n$\\mathcal{N}(0, s_\\ell^2)$,\n"
         "$s_\\ell = \\alpha\\hat\\sigma_\\ell / (\\sqrt{d}\\,\\sigma_0)$")
    _box(ax, 0.66, 0.55, 0.17, 0.3, "$A_\\ell z$: each entry\nstd $\\approx \\alpha\\hat\\sigma_\\ell$",
         "#cfe3c8")
    _box(ax, 0.9, 0.55, 0.17, 0.3, "hidden states\nentering layer $\\ell$:\nstd $\\hat\\sigma_\\ell$", "#f6dede")
    _arrow(ax, (0.18, 0.55), (0.28, 0.55))
    _arrow(ax, (0.48, 0.55), (0.575, 0.55))
    _arrow(ax, (0.745, 0.55), (0.815, 0.55), "added to", dy=0.17)
    _arrow(ax, (0.9, 0.39), (0.38, 0.39), rad=-0.3)
    ax.text(0.64, 0.27, "the measured $\\hat\\sigma_\\ell$ sets $s_\\ell$", ha="center", fontsize=9)
    ax.set_title("the normal sampler: the perturbation's scale matched, layer by layer", fontsize=11)
    return fig


def call_anatomy() -> Figure:
    """What one API call is and what the meter counts: a prompt, the training sentences, the answer's logits."""
    fig, ax = _canvas(10, 2.4)
    _box(ax, 0.12, 0.55, 0.19, 0.32, "one candidate prompt\n($L$ vectors)", "#dbe9f6")
    _box(ax, 0.38, 0.55, 0.21, 0.32, "x every training sentence\n(prompt tokens + text tokens)", "#dbe9f6")
    _box(ax, 0.64, 0.55, 0.17, 0.32, "model\n(forward passes)", "#f6dede")
    _box(ax, 0.88, 0.55, 0.18, 0.32, "label-word logits\nper sentence", "#f6dede")
    _arrow(ax, (0.215, 0.55), (0.27, 0.55))
    _arrow(ax, (0.49, 0.55), (0.555, 0.55), "tokens billed", dy=0.18)
    _arrow(ax, (0.725, 0.55), (0.79, 0.55))
    ax.text(0.5, 0.08, "one API call = one candidate on the whole training set; a generation = a population of calls",
            ha="center", fontsize=9)
    ax.set_title("the unit of cost: one API call", fontsize=11)
    return fig


def kshot_split(k: int, classes: int) -> Figure:
    """The few-shot split: ``k`` training and ``k`` dev examples per class, the test set apart."""
    fig, ax = _canvas(9, 0.55 * classes + 1.4, xlim=(0, 2 * k + 3.2), ylim=(-0.9, classes + 0.3))
    for c in range(classes):
        for i in range(2 * k):
            colour = "#dbe9f6" if i < k else "#fbe5c8"
            ax.add_patch(FancyBboxPatch((i + 0.1, c + 0.15), 0.8, 0.6, facecolor=colour, edgecolor="0.4", **BOX))
        ax.text(-0.1, c + 0.45, f"class {c}", ha="right", va="center", fontsize=9)
    ax.add_patch(FancyBboxPatch((2 * k + 0.6, 0.15), 2.4, classes - 0.4, facecolor="0.9", edgecolor="0.4", **BOX))
    ax.text(2 * k + 1.8, classes / 2, "test set\n(never seen\nwhile tuning)", ha="center", va="center", fontsize=9)
    ax.text(k / 2, -0.5, f"train: k = {k} per class", ha="center", fontsize=9)
    ax.text(1.5 * k, -0.5, f"dev: k = {k} per class", ha="center", fontsize=9)
    ax.set_xlim(-1.6, 2 * k + 3.2)
    ax.set_title("the few-shot split of one seed", fontsize=11)
    return fig
