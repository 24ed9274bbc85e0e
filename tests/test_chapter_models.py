"""The model is one variable: chapter 4 run with another model than SmolLM2.

Chapter 4's model-specific step (the residual-stream check) asks the model where its branches
are; here the whole chapter is executed, in the ci profile, with ``BBT_MODEL`` naming a tiny
random RoBERTa-style masked LM (a post-norm model, unlike SmolLM2), from its Markdown source.
The tiny model's outputs are noise: this checks that every cell runs and that the residual
verdict is the post-norm one, never results. About a minute; deselect with -m "not rehearsal".
"""
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = ROOT / "book" / "chapters" / "04_divide_and_conquer.md"


@pytest.mark.rehearsal
def test_chapter_4_runs_with_a_masked_lm_named_in_bbt_model(tmp_path, monkeypatch):
    import jupytext
    import nbclient

    from bbt_mini.lm.tiny import tiny_random_masked_lm

    folder = tiny_random_masked_lm(tmp_path / "tiny-roberta", "roberta")
    nb = jupytext.read(CHAPTER)
    for key, value in {"BBT_MODEL": str(folder), "BBT_PROFILE": "ci", "BBT_MINI_CACHE": str(tmp_path / "cache"),
                       "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
                       "HF_HUB_OFFLINE": "1", "BBT_DEVICE": "cpu"}.items():
        monkeypatch.setenv(key, value)  # the kernel inherits this process's environment
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()

    outputs = "".join(o.get("text", "") for cell in nb.cells if cell.cell_type == "code"
                      for o in cell.get("outputs", []))
    assert "branches of a post-norm model" in outputs  # the check asked the model, which is post-norm
    glued = {}
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            meta = o.get("metadata", {}).get("scrapbook", {})
            if meta.get("name"):
                glued[meta["name"]] = next(v for k, v in o.get("data", {}).items() if k.endswith("text/plain"))
    assert "post-norm" in glued["resid_verdict"] or "rounding" in glued["resid_verdict"]
    assert str(folder) in glued["ch4_schedule"]  # every run named the chosen model
    assert {"search_verdict", "depth_verdict", "p0_v2_verdict", "pair_verdict", "pairs_findings"} <= set(glued)
