"""Length groups stay within the token budget when a long prompt goes in front of every example."""
import numpy as np

from bbt_mini.service.blackbox import BlackBox
from bbt_mini.lm.encoding import length_groups


def test_groups_respect_max_tokens_with_a_long_prompt_and_change_no_logit(tiny_causal_setup, tiny_causal):
    batch = tiny_causal_setup.test
    words = tiny_causal_setup.verbalizer.words
    L = 60  # an in-context prompt much longer than the examples
    groups = length_groups(batch, np.arange(len(batch)), group_size=1000, max_tokens=150, prompt_length=L)
    assert len(groups) > 1, "a 150-token budget must split these examples"
    lengths = batch.lengths()
    for g in groups:
        widest = max(lengths[g]) + L + len(batch.head)
        assert len(g) == 1 or len(g) * widest <= 150
        assert list(lengths[g]) == sorted(lengths[g])
    assert sorted(np.concatenate(groups).tolist()) == list(range(len(batch)))  # nothing dropped, nothing twice
    assert len(length_groups(batch, np.arange(len(batch)), 1000, 10**6, L)) == 1
    roomy = BlackBox(tiny_causal, words, group_size=1000, max_tokens=10**6)
    tight = BlackBox(tiny_causal, words, group_size=1000, max_tokens=150)
    prompt = (0.5 * np.random.default_rng(0).standard_normal((2, L, tiny_causal.hidden_size))).astype(np.float32)
    np.testing.assert_allclose(tight(prompt, batch).logits, roomy(prompt, batch).logits, atol=1e-5)


def test_groups_are_cut_at_group_size_in_length_order(tiny_causal_setup):
    batch = tiny_causal_setup.test
    groups = length_groups(batch, np.arange(len(batch)), group_size=4, max_tokens=10**6)
    assert [len(g) for g in groups] == [4, 2]
    lengths = batch.lengths()
    assert max(lengths[groups[0]]) <= min(lengths[groups[1]])
