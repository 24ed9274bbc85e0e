"""Baselines: the manual prompt, in-context learning, and the gradient references."""
import numpy as np
import torch

from bbt_mini import baselines
from bbt_mini.experiment import evaluate


def test_manual_prompt_is_the_empty_prompt(tiny_setup):
    r = baselines.manual_prompt(tiny_setup)
    assert r["method"] == "manual" and r["calls"] == 0
    assert r["test_accuracy"] == evaluate(tiny_setup.service, tiny_setup.test)["accuracy"]


def test_demonstrations_carry_the_answers(tiny_setup):
    text = baselines.demonstrations(tiny_setup)
    assert text.count("\n\n") == len(tiny_setup.train)
    for ex in tiny_setup.split.train:
        word = tiny_setup.verbalizer.words[ex["label"]]
        assert ex["text"] + "\nSentiment (positive or negative):" + word in text


def test_in_context_prompt_equals_writing_the_demonstrations_out(tiny_setup, smol):
    """The demonstrations go in as embeddings of their tokens: the same as sending them as text."""
    r = baselines.in_context(tiny_setup, per_class=1)
    context = baselines.demonstrations(tiny_setup, per_class=1)
    ids = smol.tokenizer(context, add_special_tokens=False)["input_ids"]
    assert r["context_tokens"] == len(ids) and r["demonstrations"] == 2
    ex = tiny_setup.split.test[0]
    full = context + tiny_setup.task.format(ex, tiny_setup.verbalizer)
    service = tiny_setup.service
    got = service(service.token_embeddings(ids)[None], service.encode([tiny_setup.task.format(ex, tiny_setup.verbalizer)],
                                                                       [ex["label"]])).logits[0, 0]
    with torch.no_grad():
        x = torch.cat([smol.embed(torch.tensor(ids))[None],
                       smol.embed(smol.tokenizer(full[len(context):], return_tensors="pt")["input_ids"])], 1)
        ref = smol.model(inputs_embeds=x).logits[0, -1, service.label_ids].numpy()
    np.testing.assert_allclose(got, ref, atol=1e-4)


def test_prompt_tuning_lowers_the_training_loss_and_leaves_the_weights_alone(tiny_setup):
    r = baselines.prompt_tuning(tiny_setup, prompt_length=2, steps=6, lr=0.05, eval_every=3, progress=False)
    losses = [e["train_loss"] for e in r["curve"]]
    assert losses[-1] < losses[0]
    assert r["weights_unchanged"] is True
    assert r["passes"]["backward_examples"] == 6 * len(tiny_setup.train)
    assert 0 <= r["test_accuracy"] <= 1


def test_feature_mlp_fits_its_training_set(tiny_setup):
    r = baselines.feature_mlp(tiny_setup, steps=60, eval_every=20)
    assert 0 <= r["test_accuracy"] <= 1 and r["best_dev_step"] in (20, 40, 60)
    assert r["passes"]["forward_examples"] == len(tiny_setup.train) + len(tiny_setup.dev) + len(tiny_setup.test)
