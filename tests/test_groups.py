"""Length groups stay within the token budget when a long prompt goes in front of every example."""
import numpy as np

from bbt_mini.blackbox import BlackBox


def test_groups_respect_max_tokens_with_a_long_prompt_and_change_no_logit(tiny_setup, smol):
    batch = tiny_setup.train
    roomy = BlackBox(smol, tiny_setup.verbalizer.words, group_size=1000, max_tokens=10**6)
    tight = BlackBox(smol, tiny_setup.verbalizer.words, group_size=1000, max_tokens=200)
    L = 60  # an in-context prompt much longer than the examples
    groups = tight._groups(batch, np.arange(len(batch)), L)
    assert len(groups) > 1, "a 200-token budget must split these examples"
    for g in groups:
        widest = max(len(batch.pieces[i]) for i in g) + L + len(batch.head)
        assert len(g) == 1 or len(g) * widest <= 200
    assert sorted(np.concatenate(groups).tolist()) == list(range(len(batch)))  # nothing dropped
    assert len(roomy._groups(batch, np.arange(len(batch)), L)) == 1
    prompt = (0.02 * np.random.default_rng(0).standard_normal((2, L, smol.hidden_size))).astype(np.float32)
    np.testing.assert_allclose(tight(prompt, batch).logits, roomy(prompt, batch).logits, atol=1e-4)
