"""The black box: exact parity with the plain model, the meter, the budget, bad input, and the boundary."""
import dataclasses

import numpy as np
import pytest
import torch

from bbt_mini.service.blackbox import BlackBox, model_behind
from bbt_mini.service.base import BudgetExhausted
from bbt_mini.methods.experiment import Setup, texts_for
from bbt_mini.lm.models import LanguageModel
from bbt_mini.data.tasks import get_task

TEXTS = ["a good film , really fun .", "dull , boring and not very good .", "fine"]
WORDS = (" bad", " great")
SMOL_TEXTS = ["Review: a gorgeous, witty film\nSentiment (positive or negative):",
              "Review: dull , lifeless and far too long .\nSentiment (positive or negative):"]


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


def prompts(lm, n, L, seed, scale=0.5):
    return (scale * np.random.default_rng(seed).standard_normal((n, L, lm.hidden_size))).astype(np.float32)


@pytest.mark.real_model
def test_empty_prompt_gives_the_plain_models_logits_smollm2(smol):
    bb = BlackBox(smol, (" negative", " positive"))
    r = bb(np.zeros((1, 0, smol.hidden_size), np.float32), bb.encode(SMOL_TEXTS, [1, 0]))
    np.testing.assert_allclose(r.logits[0], plain_logits(smol, SMOL_TEXTS, bb), atol=1e-4)


def test_empty_prompt_gives_the_plain_models_logits_causal(tiny_causal):
    bb = BlackBox(tiny_causal, WORDS)
    r = bb(np.zeros((1, 0, tiny_causal.hidden_size), np.float32), bb.encode(TEXTS, [1, 0, 1]))
    np.testing.assert_allclose(r.logits[0], plain_logits(tiny_causal, TEXTS, bb), atol=1e-5)


def test_empty_prompt_gives_the_plain_models_logits_masked(tiny_masked):
    bb = BlackBox(tiny_masked, WORDS)
    texts = ["a great movie . it was <mask> .", "this was a really dull and boring film . it was <mask> ."]
    r = bb(np.zeros((1, 0, tiny_masked.hidden_size), np.float32), bb.encode(texts, [1, 0]))
    np.testing.assert_allclose(r.logits[0], plain_logits(tiny_masked, texts, bb), atol=1e-5)


@pytest.mark.parametrize("cache_prompt", [True, False])
def test_prompt_equals_the_same_vectors_fed_after_the_bos_token(tiny_causal, cache_prompt):
    bb = BlackBox(tiny_causal, WORDS, cache_prompt=cache_prompt)
    P = prompts(tiny_causal, 3, 4, seed=0)
    got = bb(P, bb.encode(TEXTS, [1, 0, 1])).logits
    with torch.no_grad():
        for c in range(3):
            for i, t in enumerate(TEXTS):
                e = tiny_causal.embed(tiny_causal.tokenizer(t, return_tensors="pt")["input_ids"])
                x = torch.cat([e[:, :1], torch.tensor(P[c])[None], e[:, 1:]], 1)  # <s>, prompt, text
                ref = tiny_causal.model(inputs_embeds=x).logits[0, -1, bb.label_ids].numpy()
                np.testing.assert_allclose(got[c, i], ref, atol=1e-5)


def test_prompt_between_text_and_question_matches_explicit_inputs(tiny_causal):
    task = get_task("rotten_tomatoes")
    v = task.verbalizer("causal")
    exs = [{"text": "a good , fun film", "label": 1}, {"text": "dull and far too long", "label": 0}]
    bb = BlackBox(tiny_causal, v.words)
    pairs = texts_for(task, v, exs, bb, "between")
    assert pairs[0] == ("Review: a good , fun film", "\nSentiment (positive or negative):")
    P = prompts(tiny_causal, 2, 3, seed=2)
    got = bb(P, bb.encode(pairs, [1, 0])).logits
    tok = tiny_causal.tokenizer
    with torch.no_grad():
        for i, (before, after) in enumerate(pairs):
            b = tok(before, return_tensors="pt")["input_ids"]
            a = tok(after, return_tensors="pt", add_special_tokens=False)["input_ids"]
            x = torch.cat([tiny_causal.embed(b), torch.tensor(P[1])[None], tiny_causal.embed(a)], 1)
            ref = tiny_causal.model(inputs_embeds=x).logits[0, -1, bb.label_ids].numpy()
            np.testing.assert_allclose(got[1, i], ref, atol=1e-5)


@pytest.mark.parametrize("cache", [True, False])
def test_deep_prompt_with_zero_layers_equals_the_shallow_prompt(tiny_causal, cache):
    bb = BlackBox(tiny_causal, WORDS, cache_prompt=cache)
    batch = bb.encode(TEXTS, [1, 0, 1])
    P = prompts(tiny_causal, 2, 4, seed=3)
    deep = np.zeros((2, tiny_causal.num_layers, 4, tiny_causal.hidden_size), np.float32)
    deep[:, 0] = P
    np.testing.assert_allclose(bb(deep, batch).logits, bb(P, batch).logits, atol=1e-6)
    deep[:, 1] = 0.5  # a prompt added at layer 1 must change the outcome
    assert np.abs(bb(deep, batch).logits - bb(P, batch).logits).max() > 1e-3


def test_the_service_publishes_no_model(tiny_causal_setup):
    """The boundary: nothing public on the service or the setup is the model, its modules or its tokenizer."""
    service = tiny_causal_setup.service
    lm = model_behind(service)
    inside = (lm, lm.model, lm.tokenizer)
    for name in dir(service):
        if not name.startswith("_"):
            value = getattr(service, name)
            assert not isinstance(value, (LanguageModel, torch.nn.Module)) and all(value is not x for x in inside), name
    assert "lm" not in {f.name for f in dataclasses.fields(Setup)} and not hasattr(tiny_causal_setup, "lm")
    assert (service.model_name, service.kind, service.mask_token) == (lm.name, "causal", None)
    assert (service.hidden_size, service.num_layers, service.max_length) == (32, 2, 256)
    assert (service.dtype, service.device) == ("float32", "cpu")


def test_what_the_service_publishes_of_its_tokenizer(tiny_causal):
    bb = BlackBox(tiny_causal, WORDS)
    ids = bb.token_ids("a good film")
    assert ids == [tiny_causal.tokenizer.convert_tokens_to_ids(w) for w in ("a", "good", "film")]
    assert bb.token_strings(ids) == ["a", "good", "film"]
    E = tiny_causal.model.get_input_embeddings().weight
    np.testing.assert_array_equal(bb.token_embeddings(ids), E[ids].detach().numpy())


def test_meter_counts_calls_examples_tokens_and_bytes(tiny_causal):
    bb = BlackBox(tiny_causal, WORDS)
    batch = bb.encode(TEXTS, [1, 0, 1])
    n, L, H = 4, 5, tiny_causal.hidden_size
    bb(np.zeros((n, L, H), np.float32), batch)
    bb(np.zeros((1, L, H), np.float32), batch)
    m = bb.meter
    text_tokens = sum(len(tiny_causal.tokenizer(t)["input_ids"]) for t in TEXTS)
    assert (m.calls, m.requests, m.examples) == (5, 2, 15)
    assert m.tokens == 5 * (3 * L + text_tokens)
    assert m.bytes_up == 5 * (L * H * 4 + sum(len(t.encode()) for t in TEXTS))
    assert m.bytes_down == 5 * 3 * 2 * 4 + 5 * 4
    assert m.wall_s > 0


def test_budget_raises_before_overspending(tiny_causal):
    bb = BlackBox(tiny_causal, WORDS, budget=5)
    batch = bb.encode(TEXTS[:1], [1])
    bb(np.zeros((4, 1, tiny_causal.hidden_size), np.float32), batch)
    with pytest.raises(BudgetExhausted, match="only 1 of the budget of 5"):
        bb(np.zeros((2, 1, tiny_causal.hidden_size), np.float32), batch)
    assert bb.meter.calls == 4
    bb(np.zeros((1, 1, tiny_causal.hidden_size), np.float32), batch)
    assert bb.meter.calls == 5


def test_an_unknown_loss_is_refused_before_the_model_runs(tiny_causal):
    bb = BlackBox(tiny_causal, WORDS)
    batch = bb.encode(TEXTS, [1, 0, 1])
    forwards = []
    handle = tiny_causal.layers[0].register_forward_hook(lambda *a: forwards.append(1))
    try:
        with pytest.raises(ValueError, match="unknown loss 'mse'"):
            bb(np.zeros((1, 2, tiny_causal.hidden_size), np.float32), batch, loss="mse")
        assert forwards == [] and bb.meter.calls == 0
        bb(np.zeros((1, 2, tiny_causal.hidden_size), np.float32), batch, loss="hinge")
        assert forwards  # the check itself does not stop a known loss
    finally:
        handle.remove()


def test_the_between_cache_stays_within_its_bytes_and_changes_no_logit(tiny_causal):
    task = get_task("rotten_tomatoes")
    v = task.verbalizer("causal")
    exs = [{"text": t, "label": i % 2} for i, t in enumerate(TEXTS * 4)]
    roomy = BlackBox(tiny_causal, v.words, group_size=2)
    tight = BlackBox(tiny_causal, v.words, group_size=2, cache_bytes=20_000)
    big, small = (s.encode(texts_for(task, v, exs, s, "between"), [e["label"] for e in exs]) for s in (roomy, tight))
    P = prompts(tiny_causal, 2, 3, seed=4)
    ref = roomy(P, big).logits
    assert len(big._cache) == 6 and big.cache_bytes() > 20_000  # every group kept
    np.testing.assert_allclose(tight(P, small).logits, ref, atol=1e-6)
    np.testing.assert_allclose(tight(P, small).logits, ref, atol=1e-6)  # again, partly from the cache
    assert 0 < small.cache_bytes() <= 20_000 and len(small._cache) < 6
    np.testing.assert_allclose(roomy(P, big).logits, ref, atol=1e-6)  # the whole batch from the cache


@pytest.mark.parametrize("shape", [(2, 3), (2, 3, 7), (2, 5, 3, 32), (0, 3, 32)])
def test_wrong_prompt_shape_is_refused(tiny_causal, shape):
    bb = BlackBox(tiny_causal, WORDS)
    with pytest.raises(ValueError, match="prompts must have shape|no candidate"):
        bb(np.zeros(shape, np.float32), bb.encode(TEXTS[:1], [0]))


def test_nan_prompt_is_refused(tiny_causal):
    bb = BlackBox(tiny_causal, WORDS)
    P = np.zeros((1, 2, tiny_causal.hidden_size), np.float32)
    P[0, 1, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        bb(P, bb.encode(TEXTS[:1], [0]))


def test_nan_logits_are_an_error_not_an_answer(tiny_causal, monkeypatch):
    bb = BlackBox(tiny_causal, WORDS)
    batch = bb.encode(TEXTS[:2], [0, 1])
    monkeypatch.setattr(tiny_causal, "head_logits", lambda h, ids: torch.full((h.shape[0], len(ids)), float("nan")))
    with pytest.raises(FloatingPointError, match="NaN or inf logits for candidate"):
        bb(np.zeros((2, 1, tiny_causal.hidden_size), np.float32), batch)


def test_label_word_that_is_not_one_token_is_named(tiny_causal):
    with pytest.raises(ValueError, match="'good film' is not a single token.*splits into"):
        BlackBox(tiny_causal, ("good film", " bad"))


def test_bad_batches_are_refused(tiny_causal):
    bb = BlackBox(tiny_causal, WORDS)
    with pytest.raises(ValueError, match="labels must lie in 0..1"):
        bb.encode(TEXTS[:2], [0, 2])
    with pytest.raises(ValueError, match="2 texts but 1 labels"):
        bb.encode(TEXTS[:2], [0])
    with pytest.raises(ValueError, match="at least one example"):
        bb.encode([], [])
    with pytest.raises(ValueError, match="unknown loss"):
        BlackBox(tiny_causal, WORDS, loss="mse")


def test_masked_input_needs_one_mask(tiny_masked):
    bb = BlackBox(tiny_masked, WORDS)
    with pytest.raises(ValueError, match="exactly one mask token"):
        bb.encode(["no mask here ."], [0])


def _words(n: int) -> str:
    return " ".join(["good"] * n)


def test_length_limit_is_the_models_own_with_the_roberta_offset(tiny_masked):
    """RoBERTa: 130 position rows, 128 usable (positions start after padding_idx 1); BERT: 128 rows, 128 usable.
    An input of exactly the limit runs; one token more is refused with the limit named."""
    bb = BlackBox(tiny_masked, WORDS)
    assert bb.max_length == 128
    L = 5  # <s> + words + <mask> + </s> + L prompt vectors
    fits = bb.encode([_words(128 - L - 3) + " <mask>"], [0])
    assert np.isfinite(bb(np.zeros((1, L, tiny_masked.hidden_size), np.float32), fits).logits).all()
    over = bb.encode([_words(128 - L - 2) + " <mask>"], [0])
    with pytest.raises(ValueError, match="has 129 tokens; .* takes at most 128"):
        bb(np.zeros((1, L, tiny_masked.hidden_size), np.float32), over)


def test_statistics_for_the_normal_sampler_match_the_layers_inputs(tiny_causal):
    bb = BlackBox(tiny_causal, WORDS)
    mu, sd = bb.embedding_stats()
    E = tiny_causal.model.get_input_embeddings().weight
    assert abs(mu - float(E.mean())) < 1e-6 and abs(sd - float(E.std())) < 1e-6
    stats = bb.hidden_stats(bb.encode(TEXTS, [0, 1, 0]), clip_rounds=0)
    entering = {}
    hooks = [layer.register_forward_pre_hook(lambda m, a, i=i: entering.setdefault(i, []).append(a[0][0]))
             for i, layer in enumerate(tiny_causal.layers)]
    try:
        with torch.no_grad():
            for t in TEXTS:  # one text at a time: no padding to exclude
                tiny_causal.body(input_ids=tiny_causal.tokenizer(t, return_tensors="pt")["input_ids"])
    finally:
        for h in hooks:
            h.remove()
    for i in range(tiny_causal.num_layers):
        x = torch.cat(entering[i]).flatten()
        np.testing.assert_allclose(stats[i], [float(x.mean()), float(x.std())], rtol=1e-5)
    assert stats[0, 1] != pytest.approx(stats[1, 1])  # two layers, two different rows


def _layer0_inputs(lm):
    """Record the hidden states entering layer 0 (a forward pre-hook); returns (list, handle)."""
    seen = []

    def keep(module, args, kwargs):
        seen.append((args[0] if args else kwargs["hidden_states"]).detach().clone())
    return seen, lm.layers[0].register_forward_pre_hook(keep, with_kwargs=True)


def test_a_masked_lm_adds_A_z_after_the_embedding_layernorm_as_the_authors_do(tiny_masked):
    """With the prompt's p0 tokens given (``base``), the hidden state entering layer 0 at the prompt
    positions is LayerNorm(word + position + type embeddings of those tokens) + A z: what the
    authors' RoBERTa gets with the tokens in its input and A z added to the embedding output
    (``models/modeling_roberta.py``, ``cat_or_add="add"``); before, the package fed A z + p0 in
    under the LayerNorm. The text's positions are the model's own embeddings of the text."""
    lm = tiny_masked
    bb = BlackBox(lm, WORDS)
    batch = bb.encode(["a great movie . it was <mask> ."], [1])
    base = [5, 6, 7]
    Az = prompts(lm, 2, len(base), seed=3)
    p0 = bb.token_embeddings(base)
    seen, handle = _layer0_inputs(lm)
    try:
        got = bb(Az + p0, batch, base=base).logits
        old = bb(Az + p0, batch).logits
    finally:
        handle.remove()
    head = list(batch.head)
    ids = torch.tensor([head + base + list(batch.pieces[0])])
    with torch.no_grad():
        authors = lm.body.embeddings(input_ids=ids)  # the tokens in the input, through the LayerNorm
    L, at = len(base), len(head)
    h = seen[0]
    for c in range(2):
        np.testing.assert_allclose(h[c, at:at + L].numpy(), (authors[0, at:at + L] + torch.tensor(Az[c])).numpy(),
                                   atol=1e-5)
        np.testing.assert_allclose(h[c, :at].numpy(), authors[0, :at].numpy(), atol=1e-5)
        np.testing.assert_allclose(h[c, at + L:].numpy(), authors[0, at + L:].numpy(), atol=1e-5)
    assert not np.allclose(seen[1][:, at:at + L].numpy(), h[:, at:at + L].numpy(), atol=1e-3)  # A z + p0 under it
    assert not np.allclose(got, old, atol=1e-4)


def test_a_causal_lm_gives_the_same_logits_with_or_without_the_p0_tokens(tiny_causal):
    """A causal LM's embedding module is the word embedding alone: adding A z after it is adding it
    before, so the p0 tokens change nothing (SmolLM2's runs are as they were)."""
    bb = BlackBox(tiny_causal, WORDS)
    batch = bb.encode(TEXTS, [1, 0, 1])
    P = prompts(tiny_causal, 3, 3, seed=4)
    np.testing.assert_array_equal(bb(P, batch, base=[5, 6, 7]).logits, bb(P, batch).logits)


def test_bbt_on_a_masked_lm_sends_its_p0_tokens_with_every_call(tiny_masked, monkeypatch):
    from tiny import TINY, tiny_setup

    from bbt_mini.core.projection import P0_FIRST_TOKEN, first_token_ids
    from bbt_mini.methods.bbt import BBTConfig, run_bbt

    setup = tiny_setup(tiny_masked)
    bases = []
    call = type(setup.service).__call__

    def spy(self, prompts, batch, loss=None, base=None):
        bases.append(base)
        return call(self, prompts, batch, loss, base)
    monkeypatch.setattr(type(setup.service), "__call__", spy)
    run_bbt(setup, BBTConfig(**{**TINY, "p0": "tokens"}), progress=False)
    tokens = first_token_ids(TINY["prompt_length"], setup.service.vocab_size, P0_FIRST_TOKEN)
    assert len(bases) > 4 and all(b == tokens for b in bases)  # training, dev and test calls alike
