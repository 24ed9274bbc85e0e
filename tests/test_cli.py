"""The command line: runs write the promised JSON; bad arguments fail clearly."""
import json

import pytest

from bbt_mini.__main__ import main, parse_labels

SMALL = ["--budget", "8", "--popsize", "4", "--prompt-length", "2", "--intrinsic-dim", "4", "--k", "2",
         "--test-size", "6", "--eval-every", "4", "--dtype", "float32", "--device", "cpu", "--quiet"]


def test_run_bbt_writes_json(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["run", "--task", "rotten_tomatoes", "--method", "bbt", "--seed", "1", "--profile", "small",
                 "--out", str(out), *SMALL]) == 0
    r = json.loads(out.read_text())
    for key in ("task", "method", "model", "seed", "profile", "config", "calls", "tokens", "wall_s", "curve",
                "test_accuracy", "versions"):
        assert key in r
    assert r["calls"] == 8 and r["config"]["intrinsic_dim"] == 4 and r["profile"] == "small"
    assert json.loads(capsys.readouterr().out)["test_accuracy"] == r["test_accuracy"]


def test_run_with_a_user_csv(tmp_path):
    data = tmp_path / "mine.csv"
    data.write_text("text,label\n" + "\n".join(f"film {i} was {'lovely' if i % 2 else 'awful'},"
                                               f"{'positive' if i % 2 else 'negative'}" for i in range(30)))
    out = tmp_path / "r.json"
    assert main(["run", "--csv", str(data), "--template", "Review: {text} It was", "--labels",
                 "negative:bad,positive:great", "--method", "bbt", "--out", str(out), *SMALL]) == 0
    r = json.loads(out.read_text())
    assert r["task"] == "mine" and r["calls"] == 8


def test_manual_method(tmp_path):
    out = tmp_path / "m.json"
    assert main(["run", "--task", "rotten_tomatoes", "--method", "manual", "--k", "2", "--test-size", "6",
                 "--dtype", "float32", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["method"] == "manual"


@pytest.mark.parametrize("args,message", [
    (["--task", "nope"], "unknown task 'nope'"),
    (["--task", "rotten_tomatoes", "--csv", "x.csv"], "exactly one of --task or --csv"),
    (["--csv", "x.csv"], "--csv needs --template and --labels"),
    (["--task", "rotten_tomatoes", "--seed", "0"], "seed must be 1 or more"),
    (["--task", "rotten_tomatoes", "--resume"], "--resume needs --checkpoint"),
    (["--task", "rotten_tomatoes", "--model", "not-a-model"], "unknown model"),
    (["--csv", "missing.csv", "--template", "{text}", "--labels", "a:x,b:y"], "missing.csv"),
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
