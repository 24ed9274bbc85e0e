"""The gradient baselines that train inside the model, and Feature-BiLSTM: each trains what it says, its training
loss falls, it runs from the command line in the ci profile, and bad settings are refused."""
import inspect
import json
from contextlib import nullcontext

import pytest
import torch
from tiny import tiny_causal_folder, tiny_folder, tiny_lm, tiny_setup

from bbt_mini.__main__ import main
from bbt_mini.methods import baselines, finetune
from bbt_mini.methods.experiment import no_prompt
from bbt_mini.methods.registry import METHODS
from bbt_mini.run.spec import RunSpec
from bbt_mini.service.blackbox import model_behind
from bbt_mini.service.whitebox import WhiteBox

NEW = ("model_tuning", "bitfit", "lora", "p_tuning_v2", "adapter", "feature_bilstm")
FAST = {"steps": 6, "eval_every": 3, "progress": False}


@pytest.fixture(scope="module")
def roberta_setup(tmp_path_factory):
    return tiny_setup(tiny_lm(tiny_folder(tmp_path_factory, "roberta")), k=2, test_size=4)


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory):
    return tiny_causal_folder(tmp_path_factory)


@pytest.fixture()
def llama_setup(llama_folder):
    return tiny_setup(tiny_lm(llama_folder), k=2, test_size=4)


def own_copy(setup):
    """A float32 copy of the setup's model for a method to train, and a copy of its weights as they were."""
    lm = finetune.trainable_copy(setup)
    return lm, {name: p.detach().clone() for name, p in lm.model.named_parameters()}


def moved(lm, before: dict, rename=lambda name: name) -> set:
    """The names (as they were) of the weights that differ from ``before``."""
    now = {rename(name): p for name, p in lm.model.named_parameters()}
    return {name for name, p in before.items() if not torch.equal(now[name], p)}


def falls(r: dict) -> bool:
    return r["curve"][-1]["train_loss"] < r["curve"][0]["train_loss"]


def test_bitfit_trains_the_bias_terms_and_nothing_else(roberta_setup):
    lm, before = own_copy(roberta_setup)
    r = finetune.bitfit(roberta_setup, lr=1e-2, lm=lm, **FAST)
    changed = moved(lm, before)
    biases = {n for n in before if n.endswith(".bias") and n.startswith(lm.model.base_model_prefix)}
    assert changed and changed <= biases and r["terms"] == "bias" and r["base_unchanged"] is True
    assert r["trainable_parameters"] == sum(before[n].numel() for n in biases)
    assert falls(r)
    service_model = model_behind(roberta_setup.service).model  # the service's model never moves
    assert all(torch.equal(p, before[n]) for n, p in service_model.named_parameters())


def test_bitfit_on_a_model_without_biases_trains_the_norm_gains_or_refuses(llama_setup):
    lm, before = own_copy(llama_setup)
    assert not any(n.endswith(".bias") for n in before)  # Llama's layers have none
    with pytest.raises(ValueError, match="has no bias terms .* terms='norm'"):
        finetune.bitfit(llama_setup, terms="bias", lm=lm, **FAST)
    with pytest.warns(UserWarning, match="no bias terms: BitFit trains its normalisation gains"):
        r = finetune.bitfit(llama_setup, lr=1e-2, lm=lm, **FAST)
    assert r["terms"] == "norm" and moved(lm, before) <= {n for n in before if "norm" in n} and falls(r)


def test_model_tuning_changes_every_weight_and_lowers_the_loss(llama_setup):
    lm, before = own_copy(llama_setup)
    r = finetune.model_tuning(llama_setup, lr=1e-3, lm=lm, **FAST)
    assert moved(lm, before) == set(before) and r["trainable_parameters"] == sum(p.numel() for p in before.values())
    assert falls(r) and r["passes"]["backward_examples"] == FAST["steps"] * len(llama_setup.train)


def test_lora_leaves_the_base_weights_and_merges_to_the_same_outputs(llama_setup):
    from peft.tuners.lora import LoraLayer

    lm, before = own_copy(llama_setup)
    r = finetune.lora(llama_setup, lr=1e-2, rank=2, alpha=4, lm=lm, **FAST)
    assert r["base_unchanged"] is True and falls(r)
    assert not moved(lm, before, rename=lambda n: n.replace(".base_layer", ""))
    layers = [m for m in lm.model.modules() if isinstance(m, LoraLayer)]
    assert len(layers) == 2 * lm.num_layers  # query and value maps (peft's defaults for Llama)
    assert any(m.lora_B["default"].weight.abs().sum() > 0 for m in layers)  # B starts at zero: it trained
    box = WhiteBox(lm, llama_setup.service.label_words)
    with torch.no_grad():
        unmerged = finetune.readout_logits(box, llama_setup.test)
        for m in layers:
            m.merge()
        merged = finetune.readout_logits(box, llama_setup.test)
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=1e-5)
    assert r["trainable_parameters"] == sum(m.lora_A["default"].weight.numel() + m.lora_B["default"].weight.numel()
                                            for m in layers)


def test_p_tuning_v2_trains_a_prefix_at_every_layer_and_nothing_in_the_model(roberta_setup):
    lm, before = own_copy(roberta_setup)
    r = finetune.p_tuning_v2(roberta_setup, lr=5e-2, prompt_length=3, lm=lm, **FAST)
    assert not moved(lm, before) and r["base_unchanged"] is True and falls(r)
    assert r["trainable_parameters"] == 3 * lm.num_layers * 2 * lm.hidden_size  # a key and a value per layer


def test_adapters_train_beside_the_frozen_model_and_go_when_done(roberta_setup):
    lm, before = own_copy(roberta_setup)
    box = WhiteBox(lm, roberta_setup.service.label_words)
    with torch.no_grad():
        plain = finetune.readout_logits(box, roberta_setup.test)
    r = finetune.adapter(roberta_setup, lr=1e-2, bottleneck=4, lm=lm, **FAST)
    assert not moved(lm, before) and r["base_unchanged"] is True and falls(r)
    H = lm.hidden_size
    assert r["trainable_parameters"] == 2 * lm.num_layers * (2 * H * 4 + 4 + H)
    with torch.no_grad():  # the hooks are gone: the model answers as before
        torch.testing.assert_close(finetune.readout_logits(box, roberta_setup.test), plain)


def test_adapters_start_as_the_identity(roberta_setup):
    a = finetune.Bottleneck(8, 2)
    h = torch.randn(3, 8)
    assert torch.equal(a(h), h)


def test_feature_bilstm_reads_every_token_and_lowers_the_loss(roberta_setup):
    s = roberta_setup
    feats = baselines.token_features(WhiteBox.behind(s.service), s.test)
    assert [len(f) for f in feats] == [len(s.test.full_ids(i)) for i in range(len(s.test))]
    r = baselines.feature_bilstm(s, hidden=8, steps=20, eval_every=10, lr=1e-2)
    assert falls(r) and r["trainable_parameters"] == sum(
        p.numel() for p in baselines.BiLSTMHead(lm_hidden(s), 8, 2).parameters())


def lm_hidden(setup) -> int:
    return model_behind(setup.service).hidden_size


@pytest.mark.parametrize("method", NEW)
def test_each_baseline_runs_from_the_command_line_in_the_ci_profile(method, llama_folder, tmp_path):
    out = tmp_path / "r.json"
    warns = pytest.warns(UserWarning, match="no bias terms") if method == "bitfit" else nullcontext()
    with warns:  # the tiny Llama has no biases: BitFit says what it trains instead
        assert main(["run", "--task", "rotten_tomatoes", "--model", str(llama_folder), "--method", method,
                     "--profile", "ci", "--steps", "2", "--dtype", "float32", "--device", "cpu", "--quiet",
                     "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["method"] == method and r["profile"] == "ci" and 0 <= r["test_accuracy"] <= 1
    assert r["steps"] == 2 and r["trainable_parameters"] > 0 and r["wall_s"] > 0 and r["passes"]
    assert METHODS[method].label


def test_the_settings_table_is_what_the_methods_run_with():
    for name, settings in finetune.SETTINGS.items():
        defaults = {k: p.default for k, p in inspect.signature(getattr(finetune, name)).parameters.items()}
        assert {k: v for k, v in settings.items() if k != "source"}.items() <= defaults.items(), name
        assert settings["source"]


@pytest.mark.parametrize("method,config,message", [
    ("lora", {"rank": 0}, "rank must be at least 1"),
    ("adapter", {"bottleneck": 0}, "bottleneck must be at least 1"),
    ("bitfit", {"rank": 8}, r"bitfit does not use \['rank'\]"),
    ("feature_bilstm", {"steps": 0}, "steps must be at least 1"),
])
def test_bad_settings_are_refused_before_any_model_loads(method, config, message):
    with pytest.raises(ValueError, match=message):
        RunSpec(method, config=config, profile="ci")


@pytest.mark.parametrize("call,message", [
    (lambda s: finetune.lora(s, rank=2, alpha=0, progress=False), "alpha > 0"),
    (lambda s: finetune.bitfit(s, terms="weights", progress=False), "unknown terms 'weights'"),
    (lambda s: finetune.model_tuning(s, lr=0.0, progress=False), "learning rate must be positive"),
    (lambda s: finetune.adapter(s, eval_every=0, progress=False), "eval_every must be at least 1"),
])
def test_bad_settings_are_refused_by_the_methods(call, message, llama_setup):
    with pytest.raises(ValueError, match=message):
        call(llama_setup)


def test_the_copy_is_trained_not_the_service(llama_setup):
    lm = finetune.trainable_copy(llama_setup)
    assert lm.model is not model_behind(llama_setup.service).model and lm.dtype == torch.float32


def test_the_grid_runs_the_baselines_and_tables_them_under_the_papers_names(llama_folder, tmp_path):
    """The grid gives a baseline its defaults (30 steps; Feature-BiLSTM's 300 LSTM steps are left out: slow)."""
    out = tmp_path / "grid"
    methods = [m for m in NEW if m != "feature_bilstm"]
    with pytest.warns(UserWarning, match="no bias terms"):
        code = main(["grid", "--tasks", "rotten_tomatoes", "--methods", *methods, "--seeds", "1", "--profile", "ci",
                     "--model", str(llama_folder), "--out", str(out), "--k", "1", "--test-size", "4", "--device",
                     "cpu", "--dtype", "float32", "--quiet"])
    assert code == 0
    table = (out / "table.md").read_text()
    for method in methods:
        assert f"| {METHODS[method].label} |" in table
        assert json.loads((out / f"rotten_tomatoes-{method}-s1.json").read_text())["method"] == method


@pytest.mark.parametrize("placement", ["prepend", "between"])
def test_the_read_out_is_the_services_answer_without_a_prompt(llama_folder, placement):
    """Before training, the methods' read-out is the manual prompt's through the black box, with either placement."""
    s = tiny_setup(tiny_lm(llama_folder), k=2, test_size=4, placement=placement)
    box = WhiteBox(finetune.trainable_copy(s), s.service.label_words)
    with torch.no_grad():
        mine = finetune.readout_logits(box, s.test)
    service = torch.as_tensor(s.service(no_prompt(s.service), s.test).logits[0])
    torch.testing.assert_close(mine, service, atol=1e-5, rtol=1e-5)
    r = finetune.p_tuning_v2(s, lr=5e-2, prompt_length=2, **FAST)
    assert falls(r) and r["placement"] == placement


def test_the_read_out_is_the_services_answer_on_a_masked_lm(roberta_setup):
    s = roberta_setup
    with torch.no_grad():
        mine = finetune.readout_logits(WhiteBox(finetune.trainable_copy(s), s.service.label_words), s.test)
    torch.testing.assert_close(mine, torch.as_tensor(s.service(no_prompt(s.service), s.test).logits[0]),
                               atol=1e-5, rtol=1e-5)
