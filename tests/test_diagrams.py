"""The book's diagrams: each returns a figure that shows the parts its chapter names."""
import numpy as np
import pytest
from matplotlib.figure import Figure

from bbt_mini.book import diagrams


def texts(fig):
    return [t.get_text() for ax in fig.axes for t in ax.texts + [ax.title]]


def joined(fig):
    return " | ".join(texts(fig))


def test_pipeline_draws_the_loop_from_z_back_to_z():
    fig = diagrams.pipeline()
    assert isinstance(fig, Figure)
    parts = joined(fig)
    order = ["z \\in", "A z + p_0", "prompt", "model", "label-word", "loss", "CMA-ES"]
    positions = [parts.index(p) for p in order]
    assert positions == sorted(positions), "the boxes must read in the loop's order"
    assert "one API call" in parts and "next generation" in parts


def test_deep_prompt_adds_a_vector_at_every_layer():
    fig = diagrams.deep_prompt(layers=5, prompt_length=2)
    parts = texts(fig)
    assert "$A_0 z_0 + p_0$" in parts
    assert all(f"$+A_{{{layer}}} z_{{{layer}}}$" in parts for layer in range(1, 5))
    assert sum(p.startswith("entering layer") for p in parts) == 5
    assert any("L$ = 2" in p for p in parts)


@pytest.mark.parametrize("layers, popsize, rounds", [(30, 5, 1), (4, 3, 3)])
def test_schedule_gives_each_layer_one_generation_a_round_bottom_up(layers, popsize, rounds):
    fig = diagrams.schedule(layers, popsize, rounds)
    grid = np.asarray(fig.axes[0].images[0].get_array())
    assert grid.shape == (layers, layers * rounds)
    visited = ~np.isnan(grid)
    assert (visited.sum(0) == 1).all(), "one layer per generation"
    assert (visited.sum(1) == rounds).all(), "every layer once a round"
    assert [int(np.flatnonzero(visited[:, g])[0]) for g in range(layers)] == list(range(layers))
    assert fig.axes[0].images[0].get_extent()[1] == layers * rounds * popsize  # calls
    assert "API calls" in fig.axes[0].get_xlabel()


def test_moment_matching_names_the_scale_and_what_it_is_matched_to():
    parts = joined(diagrams.moment_matching())
    assert "s_\\ell = \\alpha\\hat\\sigma_\\ell / (\\sqrt{d}\\,\\sigma_0)" in parts
    assert "hidden states" in parts and "added to" in parts


def test_call_anatomy_and_kshot_split_label_their_parts():
    assert "one API call" in joined(diagrams.call_anatomy())
    split = texts(diagrams.kshot_split(3, 4))
    assert sum(p.startswith("class ") for p in split) == 4
    assert "train: k = 3 per class" in split and "dev: k = 3 per class" in split
    assert any("test set" in p for p in split)


def test_show_displays_the_figure_once_as_a_png(monkeypatch):
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(obj))
    diagrams.show(diagrams.pipeline())
    assert len(shown) == 1 and shown[0].data[:8] == b"\x89PNG\r\n\x1a\n"
