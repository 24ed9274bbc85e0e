"""bbt_mini/minimal.py, BBT and BBTv2 on one screen: the full runner's numbers, within 60 lines of code.

On a tiny random masked LM (its numbers are noise; the point is that they are the same numbers),
plus one case on the real model.
"""
import ast
import io
import tokenize
from pathlib import Path

import numpy as np
import pytest
from tiny import tiny_folder

from bbt_mini import minimal
from bbt_mini.core.optimizers import make_optimizer
from bbt_mini.methods.bbt import BBTConfig, projection_for, run_bbt
from bbt_mini.methods.bbtv2 import BBTv2Config, run_bbtv2
from bbt_mini.methods.tuning import Run
from bbt_mini.run.prepare import prepare

MINIMAL = Path(minimal.__file__)
MOST_LINES = 60
# 17 calls, 4 a generation: four whole generations, then one of a single call, which pycma must not be told
# (it takes no generation of 1). The tiny model has 2 layers.
SIZES = {"L": 2, "d": 6, "popsize": 4, "budget": 17}


def config(cls):
    """The runner's settings for :data:`SIZES`, with one dev check, at the end: its best-dev prompt is the
    incumbent, the best prompt of the training loss."""
    return cls(prompt_length=2, intrinsic_dim=6, popsize=4, budget=17, eval_every=17)


def lines_of_code(source: str) -> int:
    """Lines holding code: blank lines, comments and docstrings (a module's, class's or function's first
    string) not counted; a statement over several lines counts each of them."""
    docs = set()
    for node in ast.walk(ast.parse(source)):
        body = getattr(node, "body", None)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body and \
                isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and \
                isinstance(body[0].value.value, str):
            docs |= set(range(body[0].lineno, body[0].end_lineno + 1))
    blank = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
    code = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in blank:
            code |= set(range(token.start[0], token.end[0] + 1))
    return len(code - docs)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """The tiny model's folder: the runner and minimal.py load it by name, as they would a real model."""
    return str(tiny_folder(tmp_path_factory))


def both(model, seed):
    """minimal.py's black box and training set, and the runner's Setup, for ``seed``."""
    return (minimal.load("rotten_tomatoes", model, k=2, seed=seed),
            prepare("rotten_tomatoes", model, seed=seed, profile="ci", k=2, test_size=8))


def assert_same(minimal_run, result):
    losses, prompt = minimal_run
    assert losses == [e["train_loss"] for e in result["curve"]]
    np.testing.assert_array_equal(prompt, result["_prompt"])


def test_minimal_stays_within_60_lines_of_code_on_the_books_page():
    source = MINIMAL.read_text()
    assert lines_of_code(source) <= MOST_LINES, f"{MINIMAL.name}: {lines_of_code(source)} lines of code"
    assert max(map(len, source.splitlines())) <= 88, "minimal.py is shown in the book: lines of at most 88"


def test_the_line_count_skips_docstrings_comments_and_blanks_and_counts_every_line_of_a_statement():
    source = '"""Module\ndoc."""\nimport os\n\n# a comment\ndef f(x):\n    """Doc."""\n    return (x +  # c\n' \
             '            1)\n\n\nclass C:\n    """Doc\n    string."""\n    y = """not a\n    docstring"""\n'
    assert lines_of_code(source) == 7  # import, def, two of return, class, two of y


@pytest.mark.parametrize("seed", [1, 2])
def test_minimal_bbt_gives_the_runners_losses_and_prompt(model, seed):
    (service, train), setup = both(model, seed)
    ours = minimal.bbt(service, train, seed=seed, **SIZES)
    assert len(ours[0]) == 5 and ours[1].shape == (2, service.hidden_size)
    assert_same(ours, run_bbt(setup, config(BBTConfig), progress=False))


@pytest.mark.parametrize("seed", [1, 2])
def test_minimal_bbtv2_gives_the_runners_losses_and_deep_prompt(model, seed):
    (service, train), setup = both(model, seed)
    ours = minimal.bbtv2(service, train, seed=seed, **SIZES)
    assert ours[1].shape == (service.num_layers, 2, service.hidden_size)
    assert_same(ours, run_bbtv2(setup, config(BBTv2Config), progress=False))


def test_another_seed_gives_other_numbers(model):
    (service, train), _ = both(model, 1)
    assert minimal.bbt(service, train, seed=1, **SIZES)[0] != minimal.bbt(service, train, seed=3, **SIZES)[0]


def test_the_whole_prompt_space_is_bbt_with_A_the_identity(model):
    """d=None: sep-CMA-ES over the whole prompt, the same search as an optimiser over ``D`` numbers added to p0;
    ``record`` gets every generation (a Run's bookkeeping, dev checks and test, as chapter 2 uses it)."""
    _, setup = both(model, 1)
    service, L, H = setup.service, 2, setup.service.hidden_size
    cfg = BBTConfig(prompt_length=L, intrinsic_dim=L * H, popsize=4, budget=16, eval_every=8)
    sigma = 1 / np.sqrt(3)
    p0 = projection_for(service, BBTConfig(prompt_length=L), seed=1).p0
    by_hand, opt = Run(setup, cfg, 1, "whole"), make_optimizer("sep-cma", L * H, sigma, 4, seed=1)
    while by_hand.calls < cfg.budget:
        X = opt.ask()
        prompts = X.reshape(len(X), L, H).astype(np.float32) + p0
        r = service(prompts, setup.train, base=by_hand.base)  # p0's tokens, as every BBT call sends them
        opt.tell(X, r.loss)
        by_hand.record(r.loss, r.logits, prompts)
    ours = Run(setup, cfg, 1, "whole")
    minimal.bbt(service, setup.train, seed=1, L=L, d=None, popsize=4, budget=16, sigma0=sigma, record=ours.record,
                CMA_diagonal=True)
    a, b = by_hand.result(), ours.result()
    assert a["curve"] == b["curve"] and a["test_accuracy"] == b["test_accuracy"]
    assert any("dev_acc" in e for e in b["curve"])
    np.testing.assert_array_equal(a["_prompt"], b["_prompt"])


@pytest.mark.real_model
def test_minimal_gives_the_runners_numbers_on_the_real_model():
    """SmolLM2 at the ci profile's L = 4 and d = 16, for 5 calls: a generation of 3, then one of 2."""
    (service, train), setup = both("smollm2", 1)
    sizes = {"L": 4, "d": 16, "popsize": 3, "budget": 5}
    settings = {"prompt_length": 4, "intrinsic_dim": 16, "popsize": 3, "budget": 5, "eval_every": 5}
    assert_same(minimal.bbt(service, train, **sizes), run_bbt(setup, BBTConfig(**settings), progress=False))
    assert_same(minimal.bbtv2(service, train, **sizes), run_bbtv2(setup, BBTv2Config(**settings), progress=False))
