"""The white-box handle: the service's forward, with gradients, for the baselines that need the weights."""
import numpy as np
import pytest
import torch

from bbt_mini.service.blackbox import BlackBox, model_behind
from bbt_mini.service.whitebox import WhiteBox

TEXTS = ["a good film , really fun .", "dull , boring and not very good .", "fine"]
WORDS = (" bad", " great")


def test_white_box_logits_equal_the_black_boxes_and_carry_gradients(tiny_causal):
    service = BlackBox(tiny_causal, WORDS)
    box = WhiteBox.behind(service)
    assert box.lm is model_behind(service) is tiny_causal
    P = (0.5 * np.random.default_rng(0).standard_normal((2, 3, tiny_causal.hidden_size))).astype(np.float32)
    prompt = torch.tensor(P, requires_grad=True)
    logits = box.logits(prompt, box.encode(TEXTS, [1, 0, 1]))
    np.testing.assert_allclose(logits.detach().numpy(), service(P, service.encode(TEXTS, [1, 0, 1])).logits, atol=1e-5)
    logits[1, 0, 1].backward()
    assert prompt.grad[0].abs().max() == 0 and prompt.grad[1].abs().max() > 0  # only candidate 1's prompt moves it
    assert all(p.grad is None for p in tiny_causal.model.parameters())


def test_white_box_in_another_dtype_is_a_copy_loaded_by_name(tiny_causal):
    box = WhiteBox.behind(BlackBox(tiny_causal, WORDS), dtype=torch.bfloat16)
    assert box.lm is not tiny_causal and box.lm.dtype == torch.bfloat16 and box.lm.name == tiny_causal.name
    assert next(box.lm.model.parameters()).dtype == torch.bfloat16


def test_features_are_the_last_hidden_state_at_the_read_out(tiny_masked):
    box = WhiteBox(tiny_masked, WORDS)
    texts = ["a great movie . it was <mask> .", "so dull . it was <mask> . really"]
    got = box.features(box.encode(texts, [1, 0]))
    tok = tiny_masked.tokenizer
    with torch.no_grad():
        for i, t in enumerate(texts):
            enc = tok(t, return_tensors="pt")
            pos = int((enc["input_ids"][0] == tok.mask_token_id).nonzero()[0, 0])
            np.testing.assert_allclose(got[i].numpy(), tiny_masked.body(**enc).last_hidden_state[0, pos].numpy(),
                                       atol=1e-5)


def test_residual_branches_are_the_maps_that_write_back_in_llama_and_bert_layers(tiny_causal, tiny_masked):
    from bbt_mini.service.whitebox import residual_branches

    found = residual_branches(tiny_causal)
    assert len(found) == tiny_causal.num_layers
    for (attn, mlp), layer in zip(found, tiny_causal.layers):  # Llama: self_attn.o_proj, mlp.down_proj
        assert attn is layer.self_attn.o_proj and mlp is layer.mlp.down_proj
    for (attn, mlp), layer in zip(residual_branches(tiny_masked), tiny_masked.layers):
        assert attn is layer.attention.output.dense and mlp is layer.output.dense  # BERT / RoBERTa


def test_pre_norm_stream_is_the_embedding_plus_the_branches_and_post_norm_is_not(tiny_causal, tiny_masked):
    from bbt_mini.service.whitebox import residual_stream

    ids = torch.tensor([[0, 9, 14, 21, 5]])
    pre = residual_stream(tiny_causal, ids)
    assert not pre.post_norm and len(pre.branches) == 2 * tiny_causal.num_layers
    assert pre.relative_error < 1e-5  # Llama: the plain sum, up to float32 rounding
    assert pre.branches[0].shape == pre.hN.shape == (5, tiny_causal.hidden_size)
    post = residual_stream(tiny_masked, ids)
    assert post.post_norm  # BERT / RoBERTa: each layer returns a LayerNorm's output
    assert post.relative_error > 1e-4  # far above float32 rounding: the sum misses the normalisations
    with torch.no_grad():
        assert torch.allclose(post.hN, tiny_masked.body(input_ids=ids).last_hidden_state[0], atol=1e-5)


def test_residual_stream_refuses_a_batch(tiny_causal):
    from bbt_mini.service.whitebox import residual_stream

    with pytest.raises(ValueError, match=r"one sequence of shape \(1, T\)"):
        residual_stream(tiny_causal, torch.tensor([[0, 9], [0, 14]]))
