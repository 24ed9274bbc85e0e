"""Baselines: the manual prompt, in-context learning, and the gradient references (white-box on purpose)."""
import numpy as np
import pytest
import torch

from bbt_mini.data.tasks import csv_task
from bbt_mini.methods import baselines
from bbt_mini.methods.experiment import texts_for
from bbt_mini.run.prepare import prepare
from bbt_mini.service.blackbox import model_behind
from bbt_mini.service.whitebox import WhiteBox


def plain_last_logits(lm, label_ids, texts, prefix_ids=()):
    """The plain model on ``prefix_ids + tokens(text)`` (causal LMs), one text at a time."""
    out = []
    with torch.no_grad():
        for t in texts:
            ids = lm.tokenizer(t)["input_ids"]
            x = lm.embed(torch.tensor(ids[:1] + list(prefix_ids) + ids[1:]))[None]  # <s>, context, text
            out.append(lm.model(inputs_embeds=x).logits[0, -1, label_ids].numpy())
    return np.stack(out)


def test_manual_prompt_scores_the_plain_models_answers(tiny_causal_setup, tiny_causal):
    s = tiny_causal_setup
    texts = [s.task.format(ex, s.verbalizer) for ex in s.split.test]
    logits = plain_last_logits(tiny_causal, s.service.label_ids, texts)
    labels = np.array([ex["label"] for ex in s.split.test])
    r = baselines.manual_prompt(s)
    assert r["method"] == "manual" and r["calls"] == 0 and r["model"] == tiny_causal.name
    assert r["test_accuracy"] == float(np.mean(logits.argmax(-1) == labels))
    assert r["predicted_share"] == [float(np.mean(logits.argmax(-1) == c)) for c in (0, 1)]


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_calibration_divides_out_the_label_bias_measured_on_content_free_inputs(tiny_causal_setup, tiny_causal):
    """Contextual calibration (Zhao et al., 2021), recomputed from the plain model: the bias is the mean
    label-word softmax on "N/A", "" and "[MASK]" in the template, and every test answer is divided by it."""
    s = tiny_causal_setup
    free = [s.task.format({"text": t}, s.verbalizer) for t in baselines.CONTENT_FREE]
    bias = _softmax(plain_last_logits(tiny_causal, s.service.label_ids, free).astype(np.float64)).mean(0)
    bias /= bias.sum()
    texts = [s.task.format(ex, s.verbalizer) for ex in s.split.test]
    raw = plain_last_logits(tiny_causal, s.service.label_ids, texts).astype(np.float64)
    labels = np.array([ex["label"] for ex in s.split.test])
    pred = (_softmax(raw) / bias).argmax(-1)
    r = baselines.calibrated_prompt(s)
    assert r["method"] == "calibrated" and r["calls"] == 0
    np.testing.assert_allclose(r["label_bias"], bias, rtol=1e-4)
    assert r["test_accuracy"] == float(np.mean(pred == labels))
    assert r["predicted_share"] == [float(np.mean(pred == c)) for c in (0, 1)]
    assert r["predicted_share_uncalibrated"] == [float(np.mean(raw.argmax(-1) == c)) for c in (0, 1)]
    assert r["meter"]["examples"] == len(free) + len(texts)  # one call on the content-free inputs, one on test
    # The tiny model answers one class for every test sentence; the correction must move some answers.
    assert max(r["predicted_share_uncalibrated"]) == 1.0 and r["predicted_share"] != r["predicted_share_uncalibrated"]


def test_calibration_moves_a_biased_answer_and_leaves_an_unbiased_one():
    logits = np.log([[0.7, 0.3], [0.9, 0.1], [0.2, 0.8]])
    moved = baselines.calibrate(logits, np.array([0.8, 0.2])).argmax(-1)  # the template favours class 0
    assert moved.tolist() == [1, 0, 1]  # 0.7/0.8 < 0.3/0.2: the first answer flips, the others stay
    np.testing.assert_allclose(baselines.calibrate(logits, np.array([0.5, 0.5])), logits - np.log(0.5))
    with pytest.raises(ValueError, match="positive probabilities"):
        baselines.calibrate(logits, np.array([1.0, 0.0]))
    with pytest.raises(ValueError, match="positive probabilities"):
        baselines.calibrate(logits, np.array([0.2, 0.3, 0.5]))


def test_demonstrations_carry_the_answers(tiny_causal_setup):
    text = baselines.demonstrations(tiny_causal_setup)
    assert text.count("\n\n") == len(tiny_causal_setup.train)
    for ex in tiny_causal_setup.split.train:
        word = tiny_causal_setup.verbalizer.words[ex["label"]]
        assert ex["text"] + "\nSentiment (positive or negative):" + word in text


def _icl_logits(setup, monkeypatch, **kw):
    """Run in_context and return the logits its one service call returned, and its result."""
    seen = []
    shares = baselines._shares

    def spy(service, batch, prompt=None):
        seen.append(service(np.asarray(prompt)[None], batch).logits[0])
        return shares(service, batch, prompt)

    monkeypatch.setattr(baselines, "_shares", spy)
    r = baselines.in_context(setup, **kw)
    return seen[0], r


@pytest.mark.parametrize("placement", ["prepend", "between"])
def test_in_context_equals_writing_the_demonstrations_before_the_whole_input(tiny_causal, monkeypatch, placement):
    """With either placement, the demonstrations come before the whole test input (not between its parts)."""
    s = prepare("rotten_tomatoes", tiny_causal, seed=1, profile="ci", k=2, test_size=6, placement=placement)
    got, r = _icl_logits(s, monkeypatch, per_class=1)
    context = baselines.demonstrations(s, per_class=1)
    ids = s.service.token_ids(context)
    assert r["context_tokens"] == len(ids) and r["demonstrations"] == 2 and r["per_class"] == 1
    texts = [s.task.format(ex, s.verbalizer) for ex in s.split.test]
    np.testing.assert_allclose(got, plain_last_logits(tiny_causal, s.service.label_ids, texts, ids), atol=1e-5)


@pytest.mark.real_model
def test_in_context_equals_writing_the_demonstrations_out_smollm2(smol_setup, smol):
    r = baselines.in_context(smol_setup, per_class=1)
    context = baselines.demonstrations(smol_setup, per_class=1)
    ids = smol.tokenizer(context, add_special_tokens=False)["input_ids"]
    assert r["context_tokens"] == len(ids) and r["demonstrations"] == 2
    ex = smol_setup.split.test[0]
    text = smol_setup.task.format(ex, smol_setup.verbalizer)
    service = smol_setup.service
    got = service(service.token_embeddings(ids)[None], service.encode([text], [ex["label"]])).logits[0, 0]
    with torch.no_grad():
        x = torch.cat([smol.embed(torch.tensor(ids))[None], smol.embed(smol.tokenizer(text, return_tensors="pt")
                                                                         ["input_ids"])], 1)
        ref = smol.model(inputs_embeds=x).logits[0, -1, service.label_ids].numpy()
    np.testing.assert_allclose(got, ref, atol=1e-4)


def test_in_context_keeps_all_demonstrations_within_the_length_limit(tiny_causal):
    """8 per class overflow the tiny model's 256 tokens: by default the most per class that fit are used,
    with a warning; asking for 8 per class explicitly is refused with the number that fits."""
    s = prepare("rotten_tomatoes", tiny_causal, seed=1, profile="ci", k=8, test_size=6)
    assert len(s.service.token_ids(baselines.demonstrations(s))) > 256
    with pytest.warns(UserWarning, match=r"overflow .* using \d per class"):
        r = baselines.in_context(s)
    longest = len(s.test.head) + int(s.test.lengths().max())
    assert 1 <= r["per_class"] < 8 and r["demonstrations"] == 2 * r["per_class"]
    assert r["context_tokens"] + longest <= 256
    one_more = s.service.token_ids(baselines.demonstrations(s, r["per_class"] + 1))
    assert len(one_more) + longest > 256  # not needlessly short
    with pytest.raises(ValueError, match=rf"room for \d+ \(of 256\); at most {r['per_class']} per class fit"):
        baselines.in_context(s, per_class=8)


def toy_task(tmp_path, n: int = 120):
    """A masked-LM task decided by one word ('good' or 'awful') among filler words."""
    rng = np.random.default_rng(0)
    filler = "the a this that movie film story plot acting very really".split()
    rows = ["text,label"]
    for i in range(n):
        words = list(rng.choice(filler, 2)) + ["good" if i % 2 else "awful"]
        rng.shuffle(words)
        rows.append(f"{' '.join(words)},{'pos' if i % 2 else 'neg'}")
    path = tmp_path / "toy.csv"
    path.write_text("\n".join(rows) + "\n")
    return csv_task(path, "{text} . it was <mask> .", {"neg": " bad", "pos": " great"}, kind="masked")


def test_in_context_end_to_end_on_a_masked_lm(tiny_masked, tmp_path, monkeypatch):
    s = prepare(toy_task(tmp_path), tiny_masked, seed=1, profile="ci", k=2, test_size=4)
    got, r = _icl_logits(s, monkeypatch)
    context = baselines.demonstrations(s)
    assert context.count("it was bad .") + context.count("it was great .") == 4 == r["demonstrations"]
    tok = tiny_masked.tokenizer
    with torch.no_grad():
        for i, ex in enumerate(s.split.test):
            enc = tok(context + s.task.format(ex, s.verbalizer, tok.mask_token), return_tensors="pt")
            pos = int((enc["input_ids"][0] == tok.mask_token_id).nonzero()[0, 0])
            ref = tiny_masked.model(**enc).logits[0, pos, s.service.label_ids].numpy()
            np.testing.assert_allclose(got[i], ref, atol=1e-5)


def test_prompt_tuning_lowers_the_training_loss_on_the_service_forward(tiny_causal_setup):
    r = baselines.prompt_tuning(tiny_causal_setup, prompt_length=2, steps=6, lr=0.5, eval_every=3, progress=False)
    losses = [e["train_loss"] for e in r["curve"]]
    assert losses[-1] < losses[0]
    assert r["weights_unchanged"] is True
    assert [e.get("dev_acc") is not None for e in r["curve"]] == [False, False, True, False, False, True]
    assert r["passes"]["backward_examples"] == 6 * len(tiny_causal_setup.train)
    # the best-dev prompt, sent through the black box, gets the reported test accuracy
    s = tiny_causal_setup
    acc = s.service(r["_prompt"][None], s.test).logits[0].argmax(-1) == s.test.labels
    assert r["test_accuracy"] == float(acc.mean())


def test_prompt_tuning_reports_a_weight_that_moved(tmp_path, monkeypatch):
    """``weights_unchanged`` is a real check: a step that also nudges one weight is reported."""
    from bbt_mini.lm.loading import load_model
    from bbt_mini.lm.tiny import tiny_random_causal_lm

    lm = load_model(str(tiny_random_causal_lm(tmp_path, seed=3)), device="cpu", dtype=torch.float32)
    s = prepare("rotten_tomatoes", lm, seed=1, profile="ci", k=1, test_size=2)
    step = torch.optim.Adam.step

    def leaky_step(self, *a, **kw):
        with torch.no_grad():
            lm.model.lm_head.weight[0, 0] += 1e-3
        return step(self, *a, **kw)

    monkeypatch.setattr(torch.optim.Adam, "step", leaky_step)
    r = baselines.prompt_tuning(s, prompt_length=1, steps=1, eval_every=1, init="zeros", progress=False)
    assert r["weights_unchanged"] is False


def test_features_read_the_whole_text_with_either_placement(tiny_causal_setup):
    """Feature-MLP's features: the last hidden state at the read-out, the same for both placements."""
    s = tiny_causal_setup
    box = WhiteBox.behind(s.service)
    between = box.encode(texts_for(s.task, s.verbalizer, s.split.test, box, "between"), s.test.labels)
    prepend = box.features(s.test)
    np.testing.assert_allclose(box.features(between).numpy(), prepend.numpy(), atol=1e-5)
    lm = model_behind(s.service)
    with torch.no_grad():
        for i, ex in enumerate(s.split.test):
            ids = lm.tokenizer(s.task.format(ex, s.verbalizer), return_tensors="pt")["input_ids"]
            np.testing.assert_allclose(prepend[i].numpy(), lm.body(input_ids=ids).last_hidden_state[0, -1].numpy(),
                                       atol=1e-5)


def test_feature_mlp_runs_with_fewer_steps_than_eval_every(tiny_causal_setup):
    r = baselines.feature_mlp(tiny_causal_setup, steps=3, eval_every=25)
    assert r["best_dev_step"] in (3,) and r["steps"] == 3


def test_feature_mlp_learns_a_separable_task_end_to_end_on_a_masked_lm(tiny_masked, tmp_path):
    """The frozen features carry the deciding word; the MLP finds it."""
    s = prepare(toy_task(tmp_path), tiny_masked, seed=1, profile="ci", k=8, test_size=20)
    r = baselines.feature_mlp(s, steps=200, eval_every=50)
    assert r["test_accuracy"] >= 0.9 and r["passes"]["forward_examples"] == len(s.train) + len(s.dev) + len(s.test)


def test_prompt_tuning_refuses_an_unknown_init(tiny_causal_setup):
    with pytest.raises(ValueError, match="unknown init 'random'; choose 'tokens' or 'zeros'"):
        baselines.prompt_tuning(tiny_causal_setup, init="random", progress=False)


@pytest.mark.parametrize("per_class", [0, 3])
def test_in_context_refuses_a_per_class_the_training_set_cannot_give(tiny_causal_setup, per_class):
    with pytest.raises(ValueError, match=rf"per_class must lie in 1..2 .*got {per_class}"):
        baselines.in_context(tiny_causal_setup, per_class=per_class)
