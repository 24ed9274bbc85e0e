"""The tuned prompt as the product: saved, loaded back, answering new rows (in-process, as a PEFT adapter,
through a vLLM server); every bad input refused, with its reason, before any model loads and before
anything is written."""
import csv
import json
import os
import shutil

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.numpy import save_file
from tiny import TINY, tiny_lm, tiny_setup

import bbt_mini.lm.loading
from bbt_mini.__main__ import main
from bbt_mini.data.splits import kshot_split
from bbt_mini.data.tasks import csv_task, get_task
from bbt_mini.lm.tiny import tiny_random_causal_lm, tiny_random_masked_lm
from bbt_mini.methods.bbt import BBTConfig, projection_for, run_bbt
from bbt_mini.methods.bbtv2 import BBTv2Config, run_bbtv2
from bbt_mini.methods.baselines import manual_prompt
from bbt_mini.run import own_data, prompt_file

TEMPLATE = "the movie , {text} . it was"  # every word is in the tiny tokenizer's vocabulary
LABELS = "negative:bad,positive:good"
SIZES = ["--budget", "8", "--popsize", "4", "--prompt-length", "2", "--intrinsic-dim", "4", "--k", "2",
         "--test-size", "6", "--eval-every", "4", "--p0", "random-tokens", "--dtype", "float32", "--device", "cpu",
         "--quiet"]
WORDS = {0: ("bad", "awful", "dull", "boring", "terrible"), 1: ("good", "great", "fine", "fun", "really good")}


def write_csv(path, rows, columns=("text", "label")):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows(rows)
    return path


def sentences(n: int, seed: int = 0) -> list:
    """``n`` (text, label) rows in the tiny vocabulary: "this film was very dull", negative."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        y = i % 2
        noun = rng.choice(["film", "story", "plot", "acting"])
        out.append((f"this {noun} was {rng.choice(WORDS[y])}", ("negative", "positive")[y]))
    return out


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A tiny causal LM whose tokenizer adds no BOS (as SmolLM2's): PEFT places a prompt where BBT tuned it."""
    return str(tiny_random_causal_lm(tmp_path_factory.mktemp("no-bos"), bos=False))


@pytest.fixture(scope="module")
def tuned(model, tmp_path_factory):
    """``run --csv ... --save-prompt``: the folder, the run's result and its data."""
    here = tmp_path_factory.mktemp("tuned")
    data = write_csv(here / "reviews.csv", sentences(40))
    out, folder = here / "r.json", here / "prompt"
    assert main(["run", "--csv", str(data), "--template", TEMPLATE, "--labels", LABELS, "--model", model,
                 "--method", "bbt", "--out", str(out), "--save-prompt", str(folder), *SIZES]) == 0
    return folder, json.loads(out.read_text()), data


@pytest.fixture()
def no_model(monkeypatch):
    """Any attempt to load a model fails the test: bad input must be refused before."""
    def load(*args, **kwargs):
        raise AssertionError("a model was loaded before the input was checked")
    monkeypatch.setattr(bbt_mini.lm.loading, "_load", load)


def test_the_saved_prompt_is_A_z_plus_p0_regenerated_from_its_seed(tuned, model):
    folder, result, _ = tuned
    saved = prompt_file.load_prompt(folder)
    meta = saved.meta
    assert saved.prompt.shape == (2, 32) and saved.z.shape == (4,)
    assert (meta["model"], meta["template"], meta["label_words"], meta["classes"]) == \
        (model, TEMPLATE, [" bad", " good"], ["negative", "positive"])
    assert meta["seed"] == result["seed"] and meta["settings"] == result["config"]
    assert meta["scores"]["test_accuracy"] == result["test_accuracy"] and len(meta["weights_sha256"]) == 64
    # A and p0 from the seed alone (a fresh service on the same weights), then the stored z, give the prompt
    setup = tiny_setup(tiny_lm(model))
    projection = projection_for(setup.service, BBTConfig(**meta["settings"]), meta["seed"])
    np.testing.assert_allclose(projection(saved.z)[0], saved.prompt, atol=1e-5)
    assert meta["peft"] == {"written": True, "why_not": None}


def test_evaluate_on_the_runs_own_test_rows_gives_its_test_score_and_a_paired_verdict(tuned, model, tmp_path,
                                                                                      capsys):
    folder, result, data = tuned
    task = get_task("reviews")  # the run registered the CSV's task
    test = kshot_split(task, 2, result["seed"], 6).test
    rows = write_csv(tmp_path / "test.csv", [(ex["text"], task.classes[ex["label"]]) for ex in test])
    out = tmp_path / "e.json"
    assert main(["evaluate", "--prompt", str(folder), "--csv", str(rows), "--out", str(out), "--dtype", "float32",
                 "--device", "cpu", "--quiet"]) == 0
    e = json.loads(out.read_text())
    assert e["tuned"]["test_answers"] == result["test_answers"]
    assert e["tuned"]["test_accuracy"] == result["test_accuracy"]
    assert e["comparison"]["rule"] == "paired" and e["comparison"]["sentences"] == 6
    printed = capsys.readouterr().out
    assert e["comparison"]["sentence"] in printed and "manual prompt: accuracy" in printed


def test_predict_answers_each_row_and_a_single_text_alike(tuned, tmp_path, capsys):
    folder, result, _ = tuned
    new = [text for text, _ in sentences(5, seed=7)]
    data = write_csv(tmp_path / "new.csv", [(t,) for t in new], columns=("text",))  # no label column needed
    out = tmp_path / "answers.csv"
    assert main(["predict", "--prompt", str(folder), "--csv", str(data), "--out", str(out), "--dtype", "float32",
                 "--device", "cpu", "--batch-size", "2", "--quiet"]) == 0
    with open(out) as f:
        answers = list(csv.DictReader(f))
    assert [a["text"] for a in answers] == new
    for a in answers:
        p = np.array([float(a["p_negative"]), float(a["p_positive"])])
        assert abs(p.sum() - 1) < 1e-6 and a["class"] == ("negative", "positive")[int(p.argmax())]
    capsys.readouterr()
    assert main(["predict", "--prompt", str(folder), "--text", new[3], "--dtype", "float32", "--device", "cpu",
                 "--quiet"]) == 0
    one = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert one[0]["class"] == answers[3]["class"]
    assert abs(float(one[0]["p_positive"]) - float(answers[3]["p_positive"])) < 1e-5


def test_the_peft_adapter_answers_as_predict_does(tuned, model):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, _, _ = tuned
    saved = prompt_file.load_prompt(folder)
    rows = [{"text": t} for t, _ in sentences(6, seed=3)]
    service = prompt_file.service_for(saved, device="cpu", dtype="float32")
    ours = prompt_file.predictions(saved, rows, prompt_file.answer(saved, service, rows, progress=False))
    manual = prompt_file.predictions(saved, rows, prompt_file.answer(saved, service, rows, False, progress=False))
    assert max(abs(a["p_positive"] - b["p_positive"]) for a, b in zip(ours, manual)) > 1e-3  # the prompt counts
    tokenizer = AutoTokenizer.from_pretrained(model)
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32), str(folder))
    words = [tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in saved.meta["label_words"]]
    with torch.inference_mode():
        for row, mine in zip(rows, ours):
            ids = tokenizer(TEMPLATE.format(**row), return_tensors="pt")["input_ids"]
            probs = torch.softmax(peft(input_ids=ids).logits[0, -1, words].double(), -1).numpy()
            assert saved.classes[int(probs.argmax())] == mine["class"]
            np.testing.assert_allclose(probs, [mine["p_negative"], mine["p_positive"]], atol=1e-5)


def answers_on_its_test_rows(saved, setup) -> list:
    """The saved prompt's answers, loaded back and run on a fresh service, on the run's own test rows."""
    rows = [{f: ex[f] for f in saved.fields} for ex in setup.split.test]
    service = prompt_file.service_for(saved, device="cpu", dtype="float32")
    out = prompt_file.evaluate_rows(saved, service, rows, [ex["label"] for ex in setup.split.test], progress=False)
    return out["tuned"]["test_answers"]


def test_a_deep_prompt_is_saved_with_every_layers_z_and_no_peft_adapter(tiny_causal, tmp_path):
    setup = tiny_setup(tiny_causal)
    result = run_bbtv2(setup, BBTv2Config(**TINY), progress=False)
    saved = prompt_file.save_prompt(result, setup, tmp_path / "deep")
    assert answers_on_its_test_rows(saved, setup) == result["test_answers"]
    assert saved.prompt.shape == (2, 2, 32) and saved.z.shape == (2, 6)
    assert saved.meta["projection"]["z_gap"] < prompt_file.Z_TOLERANCE
    assert "no counterpart" in saved.meta["peft"]["why_not"]
    assert not (tmp_path / "deep" / prompt_file.PEFT_CONFIG).exists()
    with pytest.raises(prompt_file.PromptFileError, match="in-process"):
        prompt_file.service_for(saved, service="http://127.0.0.1:9/v1")


def test_a_masked_lm_prompt_gets_no_peft_adapter_and_says_why(tmp_path):
    lm = tiny_lm(tiny_random_masked_lm(tmp_path / "roberta"))
    setup = tiny_setup(lm)
    result = run_bbt(setup, BBTConfig(**TINY), progress=False)
    saved = prompt_file.save_prompt(result, setup, tmp_path / "p")
    assert answers_on_its_test_rows(saved, setup) == result["test_answers"]  # the template's <mask> found again
    assert saved.meta["peft"]["written"] is False and "<s>" in saved.meta["peft"]["why_not"]
    assert not (tmp_path / "p" / prompt_file.PEFT_WEIGHTS).exists()


def test_two_fixed_prompts_are_judged_by_the_paired_t_on_their_rows():
    import scipy.stats

    from bbt_mini.core.stats import fixed_pair

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 60)
    right_a, right_b = rng.random(60) < 0.8, rng.random(60) < 0.55

    def result(right):
        answers = np.where(right, labels, 1 - labels)
        return {"test_answers": answers.tolist(), "test_labels": labels.tolist(), "test_set": "rows",
                "test_accuracy": float(right.mean())}

    c = fixed_pair(result(right_a), result(right_b))
    assert c.rule == "paired" and c.sentences == 60 and c.n_b is None
    assert c.p == pytest.approx(scipy.stats.ttest_rel(right_a.astype(float), right_b.astype(float)).pvalue)
    assert c.verdict == ("higher" if c.p < 0.05 else "no detectable difference")
    same = fixed_pair(result(right_a), result(right_a))
    assert same.verdict == "cannot judge" and "no scale" in same.reason


def test_a_users_csv_gets_the_papers_shots_or_what_it_affords_and_a_budget_stated_first(model, tmp_path, capsys):
    data = write_csv(tmp_path / "mine.csv", sentences(40))  # 20 rows a class, 10 held out: 5 shots a class
    at = SIZES.index("--k")
    sizes = SIZES[:at] + SIZES[at + 2:]  # no --k: the user's defaults
    assert main(["run", "--csv", str(data), "--template", TEMPLATE, "--labels", LABELS, "--model", model,
                 "--method", "bbt", "--out", str(tmp_path / "r.json"), *sizes]) == 0
    err = capsys.readouterr().err
    assert "affords 5 shots per class" in err and "not the papers' 16" in err
    assert "bbt will spend 8 API calls (2 generations of 4) on 10 training rows" in err and "on this machine" in err
    assert json.loads((tmp_path / "r.json").read_text())["k"] == 5
    assert err.index("will spend") < err.index("tuned against manual prompt")  # stated before, judged after
    many = write_csv(tmp_path / "many.csv", sentences(128))  # 64 a class, 32 held out: the papers' 16 shots
    assert own_data.user_k(csv_task(many, TEMPLATE, {"negative": " bad", "positive": " good"})) == (16, None)


def test_the_run_ends_judging_the_tuned_prompt_against_the_manual_one(tiny_causal):
    setup = tiny_setup(tiny_causal)
    result = run_bbt(setup, BBTConfig(**TINY), progress=False)
    manual = manual_prompt(setup)
    lines = own_data.against_manual(result, setup)
    assert lines[1].startswith(f"  dev, {len(setup.dev)} rows") and lines[2].startswith(f"  test, {len(setup.test)}")
    assert f"the tuned prompt ({result['test_accuracy']:.3f}" in lines[2]
    assert f"the manual prompt ({manual['test_accuracy']:.3f})" in lines[2]
    better = "is higher than the manual prompt" in lines[2]
    assert ("NOT better" in lines[3]) != better


def later(path):
    """A file's time moved on, as a write a second later leaves it (the fingerprint's cache is keyed by it)."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


def test_the_weights_fingerprint_changes_with_any_weight(tmp_path, monkeypatch):
    from bbt_mini.service.fingerprint import weights_digest

    monkeypatch.setenv("BBT_MINI_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "m"
    folder.mkdir()
    weights = {"a.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "b.bias": np.ones(3, np.float32)}
    save_file(weights, str(folder / "model.safetensors"))
    first = weights_digest(folder)
    (folder / "model.safetensors").unlink()  # the same tensors in two files: the same fingerprint
    save_file({"a.weight": weights["a.weight"]}, str(folder / "model-1.safetensors"))
    save_file({"b.bias": weights["b.bias"]}, str(folder / "model-2.safetensors"))
    assert weights_digest(folder) == first
    save_file({"b.bias": weights["b.bias"] + np.float32(1e-6)}, str(folder / "model-2.safetensors"))
    later(folder / "model-2.safetensors")
    assert weights_digest(folder) != first
    bins = tmp_path / "bins"  # PyTorch .bin weights only: their bytes
    bins.mkdir()
    torch.save({"a.weight": torch.zeros(2)}, bins / "pytorch_model.bin")
    one = weights_digest(bins)
    torch.save({"a.weight": torch.ones(2)}, bins / "pytorch_model.bin")
    later(bins / "pytorch_model.bin")
    assert weights_digest(bins) != one


# ----------------------------------------------------------------------------- refusals, before any model loads


def refused(argv, message, capsys, written=None):
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert written is None or not written.exists()


def copy(folder, tmp_path):
    return shutil.copytree(folder, tmp_path / "copy")


def test_a_prompt_for_other_weights_is_refused(tuned, tmp_path, capsys, no_model):
    folder, _, data = tuned
    other = tiny_random_causal_lm(tmp_path / "other", seed=1, bos=False)  # same shapes, other weights
    refused(["predict", "--prompt", str(folder), "--csv", str(data), "--model", str(other), "--out",
             str(tmp_path / "a.csv")], "weights differ", capsys, tmp_path / "a.csv")


def test_a_model_of_another_shape_is_refused(tuned, tmp_path, capsys, no_model):
    from transformers import LlamaConfig, LlamaForCausalLM

    from bbt_mini.lm.tiny import TINY_SHAPE, word_tokenizer

    folder = tmp_path / "narrow"
    shape = {**TINY_SHAPE, "hidden_size": 16}
    LlamaForCausalLM(LlamaConfig(num_key_value_heads=1, max_position_embeddings=256, **shape)).save_pretrained(folder)
    word_tokenizer("causal", bos=False).save_pretrained(folder)
    refused(["predict", "--prompt", str(tuned[0]), "--text", "good", "--model", str(folder)],
            "does not fit", capsys)


def test_tensors_of_another_shape_are_refused(tuned, tmp_path, capsys, no_model):
    folder = copy(tuned[0], tmp_path)
    save_file({"prompt": np.zeros((3, 32), np.float32), "z": np.zeros(4, np.float32)},
              str(folder / prompt_file.TENSORS))
    refused(["predict", "--prompt", str(folder), "--text", "good"], "do not belong together", capsys)


def test_a_truncated_tensor_file_is_refused(tuned, tmp_path, capsys, no_model):
    folder = copy(tuned[0], tmp_path)
    path = folder / prompt_file.TENSORS
    path.write_bytes(path.read_bytes()[:-40])
    refused(["predict", "--prompt", str(folder), "--text", "good"], "damaged", capsys)


def test_an_edited_tensor_or_description_is_refused(tuned, tmp_path, capsys, no_model):
    folder = copy(tuned[0], tmp_path)
    saved = prompt_file.load_prompt(folder)
    with safe_open(str(folder / prompt_file.TENSORS), "np") as f:  # the same shapes and metadata, one number changed
        metadata = f.metadata()
    save_file({"prompt": saved.prompt + np.float32(0.01), "z": saved.z}, str(folder / prompt_file.TENSORS),
              metadata=metadata)
    refused(["predict", "--prompt", str(folder), "--text", "good"], "changed after it was saved", capsys)
    folder = shutil.copytree(tuned[0], tmp_path / "copy2")
    meta = json.loads((folder / prompt_file.META).read_text())
    meta["label_words"] = [" good", " bad"]
    (folder / prompt_file.META).write_text(json.dumps(meta, indent=2))
    refused(["predict", "--prompt", str(folder), "--text", "good"], "prompt.json was changed", capsys)
    (folder / prompt_file.META).write_text("{not json")
    refused(["predict", "--prompt", str(folder), "--text", "good"], "not valid JSON", capsys)
    del meta["shapes"]
    (folder / prompt_file.META).write_text(json.dumps(meta))
    refused(["predict", "--prompt", str(folder), "--text", "good"], "lacks ['shapes']", capsys)


@pytest.mark.parametrize("content,command,message", [
    ("review,label\nthis film was good,positive\n", "predict", "lacks column(s) ['text']"),
    ("", "predict", "is empty"),
    ("text\n", "predict", "has a header but no rows"),
    ("text,label\nthis film was good,positive\nthis film was bad,neutral\n", "evaluate", "line 3: label 'neutral'"),
    ("text\nthis film was good\n", "evaluate", "lacks column(s) ['label']"),
])
def test_bad_rows_are_refused_and_nothing_is_written(tuned, tmp_path, capsys, no_model, content, command, message):
    data = tmp_path / "rows.csv"
    data.write_text(content)
    out = tmp_path / ("a.csv" if command == "predict" else "e.json")
    refused([command, "--prompt", str(tuned[0]), "--csv", str(data), "--out", str(out)], message, capsys, out)


def test_run_refuses_bad_input_before_the_model_loads(tuned, model, tmp_path, capsys, no_model):
    folder, _, data = tuned
    run = ["run", "--csv", str(data), "--labels", LABELS, "--model", model, "--method", "bbt", *SIZES]
    refused([*run, "--template", "the movie was", "--save-prompt", str(tmp_path / "p")], "names no column",
            capsys, tmp_path / "p")
    refused([*run, "--template", "the movie , {review} . it was"], "lacks column(s) ['review']", capsys)
    refused([*run, "--template", TEMPLATE, "--labels", "negative:bad,positive:really good"], "not a single token",
            capsys)
    refused([*run, "--template", TEMPLATE, "--labels", "negative:bad,good:good"], "label 'positive' is not one of",
            capsys)
    before = (folder / prompt_file.META).read_bytes()
    refused([*run, "--template", TEMPLATE, "--save-prompt", str(folder)], "already holds a prompt", capsys)
    assert (folder / prompt_file.META).read_bytes() == before
    refused(["run", "--task", "rotten_tomatoes", "--method", "manual", "--model", model, "--save-prompt",
             str(tmp_path / "m")], "keeps a tuned prompt", capsys, tmp_path / "m")


def test_force_replaces_a_saved_prompt_and_its_stale_adapter(tuned, tiny_causal, tmp_path):
    folder = copy(tuned[0], tmp_path)  # holds a PEFT adapter; the BOS model's prompt gets none
    setup = tiny_setup(tiny_causal)
    result = run_bbt(setup, BBTConfig(**TINY), progress=False)
    with pytest.raises(prompt_file.PromptFileError, match="already holds"):
        prompt_file.save_prompt(result, setup, folder)
    saved = prompt_file.save_prompt(result, setup, folder, force=True)
    assert saved.meta["model"] == tiny_causal.name and not (folder / prompt_file.PEFT_WEIGHTS).exists()


# ----------------------------------------------------------------------------- through a server


def test_predict_and_evaluate_through_a_served_model_answer_as_in_process(tuned, model, tmp_path, capsys):
    """The client of test_remote.py's OpenAI-compatible stub, the stub scoring with the very model tuned on."""
    import threading
    from http.server import ThreadingHTTPServer
    from pathlib import Path

    from test_remote import Stub, _handler
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bbt_mini.service.wire import embedding_table

    folder, _, _ = tuned
    stub = Stub(embedding_table(Path(model)), AutoTokenizer.from_pretrained(model))
    stub.model = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(stub))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    data = write_csv(tmp_path / "rows.csv", sentences(6, seed=5))
    answers = {}
    try:
        for where, flags in (("there", ["--service", url]), ("here", ["--dtype", "float32", "--device", "cpu"])):
            out = tmp_path / f"{where}.csv"
            assert main(["predict", "--prompt", str(folder), "--csv", str(data), "--out", str(out), "--quiet",
                         "--batch-size", "4", *flags]) == 0
            with open(out) as f:
                answers[where] = list(csv.DictReader(f))
        assert stub.sizes  # the rows went to the server
        assert main(["evaluate", "--prompt", str(folder), "--csv", str(data), "--service", url, "--quiet"]) == 0
    finally:
        server.shutdown()
        server.server_close()
    for a, b in zip(answers["there"], answers["here"]):
        assert a["class"] == b["class"] and abs(float(a["p_positive"]) - float(b["p_positive"])) < 1e-4
    assert "manual prompt: accuracy" in capsys.readouterr().out


# ----------------------------------------------------------------------------- through the vLLM server


@pytest.mark.vllm
def test_vllm_predict_and_evaluate_through_the_server_match_in_process(tmp_path):
    import os

    from test_vllm import Own, Shared  # the server the vllm tests share (CI) or start

    server = Shared() if os.environ.get("BBT_SERVICE_PIDFILE") else Own(tmp_path / "server.log")
    try:
        server.start()
        folder = tmp_path / "p"
        flags = ["--service", server.url, "--api-key", server.key]
        assert main(["run", "--task", "rotten_tomatoes", "--method", "bbt", "--profile", "ci", "--quiet",
                     "--save-prompt", str(folder), "--out", str(tmp_path / "r.json"), *flags]) == 0
        data = write_csv(tmp_path / "new.csv", [("a gripping, funny film", "positive"),
                                                ("dull and far too long", "negative")])
        there, here = tmp_path / "there.csv", tmp_path / "here.csv"
        assert main(["predict", "--prompt", str(folder), "--csv", str(data), "--out", str(there), "--quiet",
                     *flags]) == 0
        assert main(["predict", "--prompt", str(folder), "--csv", str(data), "--out", str(here), "--quiet",
                     "--dtype", "float32", "--device", "cpu"]) == 0
        with open(there) as a, open(here) as b:
            for x, y in zip(csv.DictReader(a), csv.DictReader(b)):
                assert abs(float(x["p_positive"]) - float(y["p_positive"])) < 0.1  # a bfloat16 server
        assert main(["evaluate", "--prompt", str(folder), "--csv", str(data), "--quiet", *flags]) == 0
    finally:
        server.close()
