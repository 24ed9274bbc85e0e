"""A Colab rehearsal: chapter 1's notebook, alone in an empty folder, executed by a fresh Python
that has nothing but what a Colab runtime brings for running notebooks (ipykernel, nbclient) and
torch. Its install cell must put bbt_mini and everything else it needs in, here from this clone
(BBT_MINI_SOURCE), keep that torch, and the chapter must then run on a cold cache. Takes a few minutes;
deselect with `-m "not rehearsal"`."""
import os
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = ROOT / "book" / "chapters" / "01_lmaas.ipynb"
KERNEL = "bbt-rehearsal"
CELL_TIMEOUT = 900  # seconds, as for nbmake and the book build
# Runs the notebook with the venv's Python; writes what it got, outputs and errors, either way.
EXECUTE = """
import sys, nbclient, nbformat
nb = nbformat.read(sys.argv[1], as_version=4)
try:
    nbclient.NotebookClient(nb, kernel_name=sys.argv[3], timeout=int(sys.argv[4]),
                            resources={"metadata": {"path": "."}}).execute()
finally:
    nbformat.write(nb, sys.argv[2])
"""


def _pin(name):
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if line.split("==")[0].strip() == name:
            return line.strip()
    raise LookupError(name)


def _clone(dest):
    """What a clone of this working tree holds: tracked and untracked, not ignored, files. (pip
    builds a local source in place, leaving build/ and *.egg-info behind: not in this checkout.)"""
    try:
        files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                               cwd=ROOT, capture_output=True, check=True, timeout=60).stdout
        for name in filter(None, files.decode().split("\0")):
            if (ROOT / name).is_file():
                (dest / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, dest / name)
    except (OSError, subprocess.CalledProcessError):  # not a git checkout
        shutil.copytree(ROOT, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns(
            ".git", ".venv", "_build", "build", "*.egg-info", "__pycache__", ".ipynb_checkpoints"))
    return dest


def _tail(proc, n=3000):
    return ((proc.stdout or "") + (proc.stderr or ""))[-n:]


@pytest.mark.rehearsal
def test_chapter_1_installs_and_runs_in_a_fresh_python_as_on_colab(tmp_path):
    work, venv, cache = tmp_path / "content", tmp_path / "venv", tmp_path / "cache"
    work.mkdir()
    shutil.copy(CHAPTER, work / CHAPTER.name)
    source = _clone(tmp_path / "bbt_mini")
    python = venv / "bin" / "python"
    # Not the shared vLLM server of `make test` either: the chapter's server section skips here
    # (a cold cache has no server environment) and runs, against a real server, under nbmake.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV",
                                                            "BBT_SERVICE_URL", "BBT_API_KEY", "BBT_SERVICE_PIDFILE",
                                                            "BBT_SERVE_VENV")}
    # PIP_COMPILE=false: pip installs the same files without byte-compiling all of them (torch,
    # transformers: 92 s of installing became 39 s here, one thread; the chapter's imports then
    # compiled what they use, +14 s). What is installed, and from where, is what is checked.
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(venv),
               HF_HUB_OFFLINE="1", BBT_MINI_SOURCE=str(source), BBT_MINI_CACHE=str(cache), PIP_COMPILE="false")

    def run(*args, timeout):
        proc = subprocess.run([str(a) for a in args], cwd=work, env=env, capture_output=True,
                              text=True, timeout=timeout)
        assert proc.returncode == 0, f"{' '.join(map(str, args))[:200]} failed:\n{_tail(proc)}"
        return proc.stdout

    run(shutil.which("python3.11") or sys.executable, "-m", "venv", venv, timeout=300)
    run(python, "-m", "pip", "install", "-q", _pin("ipykernel"), f"nbclient=={version('nbclient')}",
        _pin("torch"), timeout=900)
    assert "bbt_mini" not in run(python, "-m", "pip", "list", timeout=120)
    run(python, "-m", "ipykernel", "install", "--sys-prefix", "--name", KERNEL, timeout=120)

    executed = tmp_path / "executed.ipynb"
    run(python, "-c", EXECUTE, CHAPTER.name, executed, KERNEL, CELL_TIMEOUT, timeout=2400)

    nb = nbformat.read(executed, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    assert all(c.execution_count for c in code), "a cell did not run"
    shown = "".join(o.get("text", "") for c in code for o in c.outputs if o.output_type == "stream")
    assert "skipped: no server environment" in shown, "the rehearsal must not start a vLLM server"

    where = run(python, "-c", "import bbt_mini, torch, transformers; print(bbt_mini.__file__); "
                "print(torch.__version__); print(transformers.__version__)", timeout=300).split()
    assert Path(where[0]).resolve().is_relative_to(venv.resolve()), f"bbt_mini came from {where[0]}"
    assert where[1].split("+")[0] == _pin("torch").split("==")[1], f"torch became {where[1]}"
    assert where[2] == _pin("transformers").split("==")[1], f"transformers is {where[2]}, not the colab extra's"
    assert cache.is_dir() and any(cache.iterdir()), "the chapter did not fill the cold cache"
