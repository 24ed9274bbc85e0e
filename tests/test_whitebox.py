"""The white-box handle: the service's forward, with gradients, for the baselines that need the weights."""
import numpy as np
import torch

from bbt_mini.blackbox import BlackBox, model_behind
from bbt_mini.whitebox import WhiteBox

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
