"""The black box: exact parity with the plain model, the meter, the budget, bad input."""
import numpy as np
import pytest
import torch

from bbt_mini.blackbox import BlackBox, BudgetExhausted, cross_entropy, hinge
from bbt_mini.experiment import texts_for
from bbt_mini.tasks import get_task

TEXTS = ["Review: a gorgeous, witty film\nSentiment (positive or negative):",
         "Review: dull , lifeless and far too long .\nSentiment (positive or negative):",
         "Review: fine\nSentiment (positive or negative):"]
WORDS = (" negative", " positive")


def plain_logits(lm, texts, service):
    """The plain model, one text at a time, through its own forward."""
    out = []
    with torch.no_grad():
        for t in texts:
            enc = lm.tokenizer(t, return_tensors="pt")
            logits = lm.model(**enc).logits[0]
            if lm.kind == "masked":
                pos = int((enc["input_ids"][0] == lm.tokenizer.mask_token_id).nonzero()[0, 0])
            else:
                pos = enc["input_ids"].shape[1] - 1
            out.append(logits[pos, service.label_ids].numpy())
    return np.stack(out)


def test_empty_prompt_gives_the_plain_models_logits_causal(smol):
    bb = BlackBox(smol, WORDS)
    r = bb(np.zeros((1, 0, smol.hidden_size), np.float32), bb.encode(TEXTS, [1, 0, 1]))
    np.testing.assert_allclose(r.logits[0], plain_logits(smol, TEXTS, bb), atol=1e-4)


def test_empty_prompt_gives_the_plain_models_logits_masked(tiny_masked):
    """Masked-LM road on a tiny random model: plumbing only, the logits are noise."""
    bb = BlackBox(tiny_masked, (" bad", " great"))
    texts = ["a great movie . it was <mask> .", "this was a really dull and boring film . it was <mask> ."]
    r = bb(np.zeros((1, 0, tiny_masked.hidden_size), np.float32), bb.encode(texts, [1, 0]))
    np.testing.assert_allclose(r.logits[0], plain_logits(tiny_masked, texts, bb), atol=1e-5)


def test_prompt_equals_the_same_vectors_fed_as_input_embeddings(smol):
    bb = BlackBox(smol, WORDS)
    rng = np.random.default_rng(0)
    P = (0.05 * rng.standard_normal((3, 4, smol.hidden_size))).astype(np.float32)
    got = bb(P, bb.encode(TEXTS, [1, 0, 1])).logits
    with torch.no_grad():
        for c in range(3):
            for i, t in enumerate(TEXTS):
                ids = smol.tokenizer(t, return_tensors="pt")["input_ids"]
                x = torch.cat([torch.tensor(P[c])[None], smol.embed(ids)], 1)
                ref = smol.model(inputs_embeds=x).logits[0, -1, bb.label_ids].numpy()
                np.testing.assert_allclose(got[c, i], ref, atol=1e-4)


def test_shared_prompt_cache_matches_the_full_forward(smol):
    rng = np.random.default_rng(1)
    P = (0.05 * rng.standard_normal((5, 3, smol.hidden_size))).astype(np.float32)
    fast, full = BlackBox(smol, WORDS), BlackBox(smol, WORDS, cache_prompt=False)
    np.testing.assert_allclose(fast(P, fast.encode(TEXTS, [0, 1, 0])).logits,
                               full(P, full.encode(TEXTS, [0, 1, 0])).logits, atol=1e-4)


def test_prompt_between_text_and_question_matches_explicit_inputs(smol):
    task = get_task("rotten_tomatoes")
    v = task.verbalizer("causal")
    exs = [{"text": "a gorgeous, witty film", "label": 1}, {"text": "dull and far too long", "label": 0}]
    pairs = texts_for(task, v, exs, smol, "between")
    assert pairs[0] == ("Review: a gorgeous, witty film", "\nSentiment (positive or negative):")
    bb = BlackBox(smol, v.words)
    P = (0.05 * np.random.default_rng(2).standard_normal((2, 3, smol.hidden_size))).astype(np.float32)
    got = bb(P, bb.encode(pairs, [1, 0])).logits
    with torch.no_grad():
        for i, (before, after) in enumerate(pairs):
            b = smol.tokenizer(before, return_tensors="pt")["input_ids"]
            a = smol.tokenizer(after, return_tensors="pt", add_special_tokens=False)["input_ids"]
            x = torch.cat([smol.embed(b), torch.tensor(P[1])[None], smol.embed(a)], 1)
            np.testing.assert_allclose(got[1, i], smol.model(inputs_embeds=x).logits[0, -1, bb.label_ids].numpy(),
                                       atol=1e-4)


@pytest.mark.parametrize("cache", [True, False])
def test_deep_prompt_with_zero_layers_equals_the_shallow_prompt(smol, cache):
    bb = BlackBox(smol, WORDS, cache_prompt=cache)
    batch = bb.encode(TEXTS, [1, 0, 1])
    P = (0.05 * np.random.default_rng(3).standard_normal((2, 4, smol.hidden_size))).astype(np.float32)
    deep = np.zeros((2, smol.num_layers, 4, smol.hidden_size), np.float32)
    deep[:, 0] = P
    np.testing.assert_allclose(bb(deep, batch).logits, bb(P, batch).logits, atol=1e-5)
    deep[:, 7] = 0.5  # a prompt added at layer 7 must change the outcome
    assert np.abs(bb(deep, batch).logits - bb(P, batch).logits).max() > 1e-3


def test_deep_prompt_cached_equals_full_forward(smol):
    deep = (0.05 * np.random.default_rng(4).standard_normal((3, smol.num_layers, 2, smol.hidden_size)))
    deep = deep.astype(np.float32)
    fast, full = BlackBox(smol, WORDS), BlackBox(smol, WORDS, cache_prompt=False)
    np.testing.assert_allclose(fast(deep, fast.encode(TEXTS, [0, 1, 1])).logits,
                               full(deep, full.encode(TEXTS, [0, 1, 1])).logits, atol=1e-4)


def test_deep_prompt_masked(tiny_masked):
    bb = BlackBox(tiny_masked, (" bad", " great"))
    batch = bb.encode(["a great movie . it was <mask> .", "so dull . it was <mask> ."], [1, 0])
    H, layers = tiny_masked.hidden_size, tiny_masked.num_layers
    P = np.random.default_rng(5).standard_normal((2, 3, H)).astype(np.float32)
    deep = np.zeros((2, layers, 3, H), np.float32)
    deep[:, 0] = P
    np.testing.assert_allclose(bb(deep, batch).logits, bb(P, batch).logits, atol=1e-6)
    deep[:, 1] = 1.0
    assert np.abs(bb(deep, batch).logits - bb(P, batch).logits).max() > 1e-4


def test_the_service_returns_numbers_only_and_keeps_the_model_frozen(smol):
    bb = BlackBox(smol, WORDS)
    r = bb(np.zeros((2, 1, smol.hidden_size), np.float32), bb.encode(TEXTS, [1, 0, 1]))
    assert isinstance(r.logits, np.ndarray) and isinstance(r.loss, np.ndarray)
    assert r.logits.shape == (2, 3, 2) and r.loss.shape == (2,)
    assert not any(p.requires_grad for p in smol.model.parameters())


def test_meter_counts_calls_examples_tokens_and_bytes(smol):
    bb = BlackBox(smol, WORDS)
    batch = bb.encode(TEXTS, [1, 0, 1])
    n, L, H = 4, 5, smol.hidden_size
    bb(np.zeros((n, L, H), np.float32), batch)
    bb(np.zeros((1, L, H), np.float32), batch)
    m = bb.meter
    text_tokens = sum(len(smol.tokenizer(t)["input_ids"]) for t in TEXTS)
    assert (m.calls, m.requests, m.examples) == (5, 2, 15)
    assert m.tokens == 5 * (3 * L + text_tokens)
    assert m.bytes_up == 5 * (L * H * 4 + sum(len(t.encode()) for t in TEXTS))
    assert m.bytes_down == 5 * 3 * 2 * 4 + 5 * 4
    assert m.wall_s > 0


def test_budget_raises_before_overspending(smol):
    bb = BlackBox(smol, WORDS, budget=5)
    batch = bb.encode(TEXTS[:1], [1])
    bb(np.zeros((4, 1, smol.hidden_size), np.float32), batch)
    with pytest.raises(BudgetExhausted, match="only 1 of the budget of 5"):
        bb(np.zeros((2, 1, smol.hidden_size), np.float32), batch)
    assert bb.meter.calls == 4
    bb(np.zeros((1, 1, smol.hidden_size), np.float32), batch)
    assert bb.meter.calls == 5


def test_losses():
    logits = np.array([[[2.0, 0.0], [0.0, 3.0]]])
    labels = np.array([0, 0])
    ce = -(np.log(np.exp(2) / (np.exp(2) + 1)) + np.log(1 / (1 + np.exp(3)))) / 2
    np.testing.assert_allclose(cross_entropy(logits, labels), [ce])
    np.testing.assert_allclose(hinge(logits, labels), [(0 + 5) / 2])


@pytest.mark.parametrize("shape", [(2, 3), (2, 3, 7), (2, 5, 3, 576), (0, 3, 576)])
def test_wrong_prompt_shape_is_refused(smol, shape):
    bb = BlackBox(smol, WORDS)
    with pytest.raises(ValueError, match="prompts must have shape|no candidate"):
        bb(np.zeros(shape, np.float32), bb.encode(TEXTS[:1], [0]))


def test_nan_prompt_is_refused(smol):
    bb = BlackBox(smol, WORDS)
    P = np.zeros((1, 2, smol.hidden_size), np.float32)
    P[0, 1, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        bb(P, bb.encode(TEXTS[:1], [0]))


def test_nan_logits_are_an_error_not_an_answer(smol, monkeypatch):
    bb = BlackBox(smol, WORDS)
    batch = bb.encode(TEXTS[:2], [0, 1])
    monkeypatch.setattr(smol, "head_logits", lambda h, ids: torch.full((h.shape[0], len(ids)), float("nan")))
    with pytest.raises(FloatingPointError, match="NaN or inf logits for candidate"):
        bb(np.zeros((2, 1, smol.hidden_size), np.float32), batch)


def test_label_word_that_is_not_one_token_is_named(smol):
    with pytest.raises(ValueError, match="'unbelievablyfantastic' is not a single token.*splits into"):
        BlackBox(smol, ("unbelievablyfantastic", " bad"))


def test_bad_batches_are_refused(smol):
    bb = BlackBox(smol, WORDS)
    with pytest.raises(ValueError, match="labels must lie in 0..1"):
        bb.encode(TEXTS[:2], [0, 2])
    with pytest.raises(ValueError, match="2 texts but 1 labels"):
        bb.encode(TEXTS[:2], [0])
    with pytest.raises(ValueError, match="at least one example"):
        bb.encode([], [])
    with pytest.raises(ValueError, match="unknown loss"):
        BlackBox(smol, WORDS, loss="mse")


def test_masked_input_needs_one_mask(tiny_masked):
    bb = BlackBox(tiny_masked, (" bad", " great"))
    with pytest.raises(ValueError, match="exactly one mask token"):
        bb.encode(["no mask here ."], [0])


def test_statistics_for_the_normal_sampler(smol):
    bb = BlackBox(smol, WORDS)
    mu, sd = bb.embedding_stats()
    E = smol.model.get_input_embeddings().weight.float()
    assert abs(mu - float(E.mean())) < 1e-5 and abs(sd - float(E.std())) < 1e-4
    stats = bb.hidden_stats(bb.encode(TEXTS, [0, 1, 0]))
    assert stats.shape == (smol.num_layers, 2) and (stats[:, 1] > 0).all()
