"""The command line: runs write the promised JSON; bad arguments fail clearly, before any model loads."""
import dataclasses
import json

import pytest
from tiny import tiny_folder

import bbt_mini.lm.loading
import bbt_mini.run.runs
from bbt_mini.__main__ import build_parser, main, parse_labels
from bbt_mini.core.profiles import PROFILES
from bbt_mini.methods.bbt import BBTConfig
from bbt_mini.methods.registry import METHODS
from bbt_mini.data.tasks import TASKS
from bbt_mini.run.own_data import PAPER_SHOTS
from bbt_mini.run.timing import Plan

SMALL = ["--budget", "8", "--popsize", "4", "--prompt-length", "2", "--intrinsic-dim", "4", "--k", "2",
         "--test-size", "6", "--eval-every", "4", "--p0", "zeros", "--dtype", "float32", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(tiny_folder(tmp_path_factory))


@pytest.fixture()
def no_model(monkeypatch):
    """Any attempt to load a model fails the test: the CLI must refuse bad input before."""
    def load(*args, **kwargs):
        raise AssertionError("a model was loaded before the arguments were checked")
    monkeypatch.setattr(bbt_mini.lm.loading, "_load", load)


@pytest.fixture()
def no_probe(monkeypatch):
    """The timing probe's two requests answered without a model: a run without --profile states its time from
    them, and the real probe loads the model (SmolLM2 by default: slow on a CPU)."""
    probe = {"population_s": 2.0, "one_s": 0.5, "examples": 2, "text_tokens": 20.0, "prompt_length": 10,
             "popsize": 10}
    monkeypatch.setattr(Plan, "probe", lambda self: probe)


@pytest.fixture()
def spec_seen(monkeypatch):
    """The spec a command line runs, caught where the run would start (nothing runs)."""
    seen = {}
    monkeypatch.setattr(bbt_mini.run.runs, "run_with_setup",
                        lambda spec, *a: (seen.update(spec=spec) or {"method": spec.method}, None))
    return seen


def test_run_bbt_writes_json(tiny, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["run", "--task", "rotten_tomatoes", "--model", tiny, "--method", "bbt", "--seed", "1",
                 "--profile", "small", "--out", str(out), *SMALL]) == 0
    r = json.loads(out.read_text())
    assert r["calls"] == 8 and r["config"]["intrinsic_dim"] == 4 and r["profile"] == "small"
    assert (r["model"], r["k"], r["test_size"], r["dtype"], r["device"]) == (tiny, 2, 6, "float32", "cpu")
    assert json.loads(capsys.readouterr().out)["test_accuracy"] == r["test_accuracy"]


def test_run_with_a_user_csv(tiny, tmp_path):
    data = tmp_path / "mine.csv"
    data.write_text("text,label\n" + "\n".join(f"film {i} was {'great' if i % 2 else 'awful'},"
                                               f"{'positive' if i % 2 else 'negative'}" for i in range(30)))
    out = tmp_path / "r.json"
    assert main(["run", "--csv", str(data), "--template", "{text} . It was <mask> .", "--labels",
                 "negative:bad,positive:great", "--model", tiny, "--method", "bbt", "--out", str(out), *SMALL]) == 0
    r = json.loads(out.read_text())
    assert r["task"] == "mine" and r["calls"] == 8


@pytest.mark.parametrize("method,flags,check", [
    ("manual", [], lambda r: r["calls"] == 0),
    ("calibrated", [], lambda r: r["calls"] == 0 and len(r["label_bias"]) == 2),
    ("icl", ["--per-class", "1"], lambda r: r["demonstrations"] == 2),  # one per class, not all 2 x 2 shots
])
def test_baselines_run_from_the_command_line(tiny, tmp_path, method, flags, check):
    out = tmp_path / "r.json"
    assert main(["run", "--task", "rotten_tomatoes", "--model", tiny, "--method", method, "--k", "2", "--test-size",
                 "6", "--dtype", "float32", "--device", "cpu", "--out", str(out), *flags]) == 0
    r = json.loads(out.read_text())
    assert r["method"] == method and check(r)


def test_a_csv_named_like_a_built_in_task_is_refused(tiny, tmp_path, capsys):
    data = tmp_path / "imdb.csv"
    data.write_text("text,label\ngood,positive\nbad,negative\n")
    assert main(["run", "--csv", str(data), "--template", "{text} <mask>", "--labels", "negative:bad,positive:great",
                 "--model", tiny, *SMALL]) == 2
    assert "would replace the offline task" in capsys.readouterr().err and TASKS["imdb"].source == "offline"


def test_missing_output_folder_fails_before_any_model_loads(no_model, tmp_path, capsys):
    assert main(["run", "--task", "rotten_tomatoes", "--out", str(tmp_path / "nope" / "r.json"), *SMALL]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "does not exist" in err


def test_missing_csv_fails_before_any_model_loads(no_model, capsys):
    assert main(["run", "--csv", "missing.csv", "--template", "{text}", "--labels", "a:x,b:y"]) == 2
    assert "missing.csv: no such file" in capsys.readouterr().err


def test_a_task_run_without_profile_gets_the_papers_shots_and_states_its_budget_and_time_before_tuning(
        tiny, tmp_path, monkeypatch, capsys):
    real, said = bbt_mini.run.runs.run_with_setup, {}

    def run_with_setup(spec, *args):  # what the run had said when tuning began
        said["before"] = capsys.readouterr().err
        return real(spec, *args)

    monkeypatch.setattr(bbt_mini.run.runs, "run_with_setup", run_with_setup)
    at = SMALL.index("--k")
    out = tmp_path / "r.json"
    assert main(["run", "--task", "rotten_tomatoes", "--model", tiny, "--method", "bbt", "--out", str(out),
                 *SMALL[:at], *SMALL[at + 2:]]) == 0
    r = json.loads(out.read_text())
    assert r["k"] == PAPER_SHOTS and r["calls"] == 8
    before = said["before"]
    assert "bbt will spend 8 API calls (2 generations of 4) on 32 training rows (16 per class" in before
    assert " on this machine (a probe of two requests" in before and "warning" not in before
    assert "tuned against manual prompt" in capsys.readouterr().err  # the verdict comes after the run


SMALL_SIZES = PROFILES["small"]


@pytest.mark.parametrize("flags,k,stated", [
    (["--profile", "small"], SMALL_SIZES.k_shot, False),  # a book size, as the chapters run it
    (["--profile", "small", "--k", "3"], 3, False),
    ([], PAPER_SHOTS, True),  # a user's run: the papers' shots, its budget and time stated first
    (["--k", "3"], 3, True),
])
def test_profile_chooses_a_book_size_and_without_it_a_task_gets_the_users_defaults(
        no_model, no_probe, spec_seen, capsys, flags, k, stated):
    assert main(["run", "--task", "rotten_tomatoes", "--method", "bbt", *flags]) == 0
    spec, err = spec_seen["spec"], capsys.readouterr().err
    assert spec.k == k and ("will spend" in err) == stated and "warning" not in err
    if flags[:2] == ["--profile", "small"]:
        assert spec.profile == SMALL_SIZES and spec.config.budget == SMALL_SIZES.budget
    if stated:
        assert f"bbt will spend {spec.config.budget} API calls" in err and "on this machine" in err


def test_a_task_that_affords_fewer_than_the_papers_shots_gets_what_it_affords_with_a_warning(
        no_model, no_probe, spec_seen, monkeypatch, capsys):
    rows = [{"text": f"review {i}", "label": i % 2} for i in range(14)]  # 7 a class: 3 for train, 3 for dev
    few = dataclasses.replace(TASKS["rotten_tomatoes"], name="few_reviews", test_pool=0,
                              loader=lambda: {"train": rows, "test": rows[:4]})
    monkeypatch.setitem(TASKS, "few_reviews", few)
    assert main(["run", "--task", "few_reviews", "--method", "bbt"]) == 0
    err = capsys.readouterr().err
    assert spec_seen["spec"].k == 3
    assert "warning: few_reviews affords 3 shots per class" in err and "not the papers' 16" in err
    assert "on 6 training rows (3 per class" in err
    assert err.index("warning") < err.index("will spend")


@pytest.mark.parametrize("args,message", [
    (["--k", "0"], "k must be at least 1"),
    (["--test-size", "0"], "test_size must be at least 1"),
    (["--method", "prompt_tuning", "--steps", "0"], "steps must be at least 1"),
    (["--method", "icl", "--per-class", "0"], "per_class must be at least 1"),
    (["--budget", "0"], "budget must be at least 1"),
    (["--eval-every", "0"], "eval_every must be at least 1"),
])
def test_zero_values_are_refused_not_replaced_by_defaults(no_model, args, message, capsys):
    assert main(["run", "--task", "rotten_tomatoes", "--profile", "ci", *args]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("args,message", [
    (["--method", "bbt", "--steps", "5"], "bbt does not use ['steps']"),
    (["--method", "bbtv2", "--per-class", "2"], "bbtv2 does not use ['per_class']"),
    (["--method", "manual", "--budget", "5"], "manual does not use ['budget']"),
    (["--method", "icl", "--sampler", "uniform"], "icl does not use ['sampler']"),
    (["--method", "feature_mlp", "--checkpoint", "c.ckpt"], "feature_mlp does not use ['checkpoint']"),
    (["--method", "prompt_tuning", "--popsize", "4"], "prompt_tuning does not use ['popsize']"),
])
def test_settings_that_do_not_apply_to_the_method_are_refused(no_model, args, message, capsys):
    assert main(["run", "--task", "rotten_tomatoes", "--profile", "ci", *args]) == 2
    assert message in capsys.readouterr().err


OPTIONS = {"icl": (["--per-class", "1"], {"per_class": 1}), "prompt_tuning": (["--steps", "3"], {"steps": 3}),
           "feature_mlp": (["--steps", "3"], {"steps": 3})}


@pytest.mark.parametrize("method", METHODS)
def test_placement_and_method_options_reach_every_method(no_model, no_probe, spec_seen, method):
    flags, options = OPTIONS.get(method, ([], {}))
    assert main(["run", "--task", "rotten_tomatoes", "--method", method, "--placement", "between", *flags]) == 0
    spec = spec_seen["spec"]
    assert spec.method == method and spec.placement == "between"
    assert all(spec.setting(name) == value for name, value in options.items())


def test_the_registry_has_every_method_the_command_line_offers_with_a_label_and_a_runner():
    choices = {a.dest: a.choices for a in build_parser()._subparsers._group_actions[0].choices["run"]._actions}
    grid = {a.dest: a.choices for a in build_parser()._subparsers._group_actions[0].choices["grid"]._actions}
    assert set(choices["method"]) == set(grid["methods"]) == set(METHODS)
    for name, row in METHODS.items():
        assert row.name == name and callable(row.runner) and row.label
        assert row.tunes == (row.config is not None) and (not row.deep or row.tunes)


def test_every_config_setting_has_its_flag_and_reaches_the_run(no_model, no_probe, spec_seen):
    """The flags are derived from BBTConfig: a new field gets a flag; the first landing's flags still parse."""
    values = {"int": "3", "float": "0.5", "str": "zeros"}  # valid values: the spec checks them
    args, given = [], {}
    chosen = {"optimizer": "sep-cma"}  # not the default, and it takes every other setting (adapt_sigma's last)
    for f in dataclasses.fields(BBTConfig):
        value = chosen.get(f.name) or (f.metadata["choices"][-1] if f.metadata["choices"] else
                                       values[type(f.default).__name__ if f.default is not None else "float"])
        args += ["--" + f.name.replace("_", "-"), value]
        given[f.name] = value
    assert main(["run", "--task", "rotten_tomatoes", *args]) == 0
    config = dataclasses.asdict(spec_seen["spec"].config)
    assert {name: str(config[name]) for name in given} == given
    first_landing = ("--budget", "--prompt-length", "--intrinsic-dim", "--popsize", "--sigma0", "--alpha",
                     "--sampler", "--optimizer", "--loss", "--bound", "--eval-every", "--k", "--test-size", "--steps",
                     "--checkpoint", "--resume", "--device", "--dtype", "--out", "--quiet", "--placement", "--variant")
    flags = {s for a in build_parser()._subparsers._group_actions[0].choices["run"]._actions for s in a.option_strings}
    assert set(first_landing) <= flags


def test_tasks_command_lists_every_registered_task(capsys):
    assert main(["tasks"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(TASKS)
    assert all(line.split()[1] == TASKS[line.split()[0]].source for line in lines)


@pytest.mark.parametrize("args,message", [
    (["--task", "nope"], "unknown task 'nope'"),
    (["--task", "rotten_tomatoes", "--csv", "x.csv"], "exactly one of --task or --csv"),
    (["--csv", "x.csv"], "--csv needs --template and --labels"),
    (["--task", "rotten_tomatoes", "--seed", "0"], "seed must be 1 or more"),
    (["--task", "rotten_tomatoes", "--resume"], "--resume needs --checkpoint"),
    (["--task", "rotten_tomatoes", "--model", "not-a-model"], "unknown model"),
])
def test_bad_arguments_fail_with_a_clear_message(args, message, capsys):
    assert main(["run", *args]) == 2
    assert message in capsys.readouterr().err


def test_argparse_rejects_unknown_choices(capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", "--task", "rotten_tomatoes", "--method", "sgd"])
    assert e.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_parse_labels():
    assert parse_labels("negative:bad,positive:great") == {"negative": " bad", "positive": " great"}
    for bad in ("negative", "a:x", "a:x,a:y", "a:,b:y"):
        with pytest.raises(ValueError):
            parse_labels(bad)
