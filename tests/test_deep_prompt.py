"""Deep prompts (BBTv2) against an independent reference: a hand-written forward that walks the
transformer layers itself and adds the prompt's entry ``l`` to the hidden states entering layer ``l``."""
import numpy as np
import pytest
import torch

from bbt_mini.service.blackbox import BlackBox
from bbt_mini.service.forward import DeepPrompt

WORDS = (" bad", " great")


def hand_forward(lm, ids: list, deep: torch.Tensor, offset: int) -> torch.Tensor:
    """Final hidden states of ``[ids[:offset], prompt, ids[offset:]]`` for one example, layer by layer.

    ``deep``: (layers, L, H); entry 0 is the input prompt, entry l is added before layer l."""
    body = lm.body
    L = deep.shape[1]
    emb = lm.embed(torch.tensor(ids))
    x = torch.cat([emb[:offset], deep[0], emb[offset:]])[None]
    T = x.shape[1]
    if lm.kind == "causal":  # Llama: rotary positions, a causal mask, a final norm
        layers = body.layers
        pos = torch.arange(T)[None]
        rope = body.rotary_emb(x, position_ids=pos)
        mask = torch.full((T, T), float("-inf")).triu(1)[None, None]
        h = x
        for i, layer in enumerate(layers):
            if i > 0:
                h = h.clone()
                h[0, offset:offset + L] += deep[i]
            h = layer(h, attention_mask=mask, position_ids=pos, position_embeddings=rope)
            h = h[0] if isinstance(h, tuple) else h
        return body.norm(h)[0]
    h = body.embeddings(inputs_embeds=x)  # BERT / RoBERTa: positions and layer norm, then the encoder
    for i, layer in enumerate(body.encoder.layer):
        if i > 0:
            h = h.clone()
            h[0, offset:offset + L] += deep[i]
        h = layer(h)
        h = h[0] if isinstance(h, tuple) else h
    return h[0]


def reference_logits(lm, service, texts, deep: np.ndarray) -> np.ndarray:
    out = np.zeros((len(deep), len(texts), 2), np.float32)
    with torch.no_grad():
        for c, d in enumerate(torch.tensor(deep)):
            for i, t in enumerate(texts):
                ids = lm.tokenizer(t)["input_ids"]
                offset = 1  # after <s>: both tiny tokenizers start with it
                h = hand_forward(lm, ids, d, offset)
                if lm.kind == "masked":
                    pos = ids.index(lm.tokenizer.mask_token_id) + d.shape[1]
                else:
                    pos = len(ids) + d.shape[1] - 1
                out[c, i] = lm.head_logits(h[pos][None], service.label_ids)[0].numpy()
    return out


def deep_prompts(lm, n: int, L: int, seed: int) -> np.ndarray:
    return (0.5 * np.random.default_rng(seed).standard_normal((n, lm.num_layers, L, lm.hidden_size))).astype(np.float32)


@pytest.mark.parametrize("cache_prompt", [True, False])
def test_deep_prompt_hooks_equal_a_hand_written_layer_walk_causal(tiny_causal, cache_prompt):
    texts = ["a good film .", "this movie was really very dull and boring ."]
    bb = BlackBox(tiny_causal, WORDS, cache_prompt=cache_prompt)
    deep = deep_prompts(tiny_causal, 3, 2, seed=0)
    got = bb(deep, bb.encode(texts, [1, 0])).logits
    np.testing.assert_allclose(got, reference_logits(tiny_causal, bb, texts, deep), atol=1e-5)


def test_deep_prompt_hooks_equal_a_hand_written_layer_walk_masked(tiny_masked):
    texts = ["a great movie . it was <mask> .", "so dull and not fun . it was <mask> ."]
    bb = BlackBox(tiny_masked, WORDS)
    deep = deep_prompts(tiny_masked, 3, 3, seed=1)
    got = bb(deep, bb.encode(texts, [1, 0])).logits
    np.testing.assert_allclose(got, reference_logits(tiny_masked, bb, texts, deep), atol=1e-5)


def test_the_hand_written_walk_sees_the_deep_entries(tiny_causal):
    """The reference is not blind to layer 1: dropping that entry changes its logits (and the service's)."""
    bb = BlackBox(tiny_causal, WORDS)
    texts = ["a good film ."]
    deep = deep_prompts(tiny_causal, 1, 2, seed=2)
    shallow_only = deep.copy()
    shallow_only[:, 1:] = 0
    ref, ref0 = reference_logits(tiny_causal, bb, texts, deep), reference_logits(tiny_causal, bb, texts, shallow_only)
    assert np.abs(ref - ref0).max() > 1e-3
    np.testing.assert_allclose(bb(shallow_only, bb.encode(texts, [1])).logits, ref0, atol=1e-5)


def test_deep_prompt_hooks_do_nothing_outside_their_block_and_go_with_their_owner(tiny_causal):
    ids = torch.tensor([tiny_causal.tokenizer("a good film .")["input_ids"]])

    def count():
        return sum(len(layer._forward_pre_hooks) for layer in tiny_causal.layers)

    before = count()
    with torch.no_grad():
        plain = tiny_causal.body(input_ids=ids).last_hidden_state
        hooks = DeepPrompt(tiny_causal.layers)
        assert count() == before + tiny_causal.num_layers - 1  # layers 1.. (entry 0 goes in with the input)
        assert torch.equal(tiny_causal.body(input_ids=ids).last_hidden_state, plain)
        with hooks.adding(torch.ones(1, tiny_causal.num_layers, 1, tiny_causal.hidden_size), 0):
            assert not torch.equal(tiny_causal.body(input_ids=ids).last_hidden_state, plain)
        assert hooks.active is None
        del hooks  # dropped: its hooks leave the model
        assert count() == before
