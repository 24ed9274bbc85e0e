"""The tuned prompt as the product: saved to a folder, loaded back, answering new inputs.

What black-box tuning buys is a prompt: ``z`` (``d`` numbers) and the seed that regenerates ``A`` and
``p0``, which give the soft prompt ``A z + p0`` (``L`` x hidden; BBTv2: one per layer).
:func:`save_prompt` writes it, :func:`load_prompt` reads it back and refuses what it cannot trust,
:func:`answer` answers new rows with it (in-process or through a remote service) and
:func:`evaluate_rows` scores it and the manual prompt on the same labelled rows and judges the
difference by the book's rule, paired by row (:func:`bbt_mini.core.stats.fixed_pair`).

The folder:

* ``prompt.safetensors``: the soft prompt (``prompt``) and ``z``, float32; its metadata holds the
  SHA-256 of ``prompt.json``;
* ``prompt.json``: everything else: the template, the label words and the classes, the placement,
  the model's name and the SHA-256 of its weights (:func:`bbt_mini.service.fingerprint.weights_digest`),
  the method, its settings and seed, how ``A`` is regenerated (sampler, shapes, statistics), the dev
  and test scores, the library versions, and the SHA-256 of the tensors;
* ``adapter_config.json`` and ``adapter_model.safetensors``: the same prompt as a PEFT prompt-tuning
  adapter (https://huggingface.co/docs/peft/package_reference/prompt_tuning), loadable with
  ``peft.PeftModel.from_pretrained``, where PEFT puts the virtual tokens where the prompt was tuned
  (:func:`peft_mismatch` says why not otherwise).

The search does not keep ``z`` beside the prompt it returns, so ``z`` is recovered by least squares
from the regenerated ``A`` (its ``L x hidden`` rows outnumber its ``d`` columns: full column rank),
and the largest gap of ``A z + p0`` to the prompt is recorded: proof that the file's seed, sampler
and shapes regenerate the prompt.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file
from tqdm.auto import tqdm
from transformers import AutoConfig

from ..core.metrics import f1, softmax
from ..core.results import test_set_id, versions
from ..core.stats import fixed_pair, say
from ..data.schema import Task, Verbalizer
from ..lm.loading import load_model, model_kind
from ..methods.bbt import BBTConfig, projection_for
from ..methods.bbtv2 import BBTv2Config, deep_projections
from ..methods.experiment import no_prompt, texts_for
from ..service.blackbox import BlackBox
from ..service.fingerprint import weights_digest, weights_folder
from ..service.remote import remote_service

FORMAT = "bbt_mini-prompt/1"
META, TENSORS = "prompt.json", "prompt.safetensors"
PEFT_CONFIG, PEFT_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"  # PEFT's file names
FILES = (META, TENSORS, PEFT_CONFIG, PEFT_WEIGHTS)
# What answering with a saved prompt reads from prompt.json (the rest describes how it was made).
NEEDED = ("template", "label_words", "classes", "metric", "placement", "kind", "model", "weights_sha256", "shapes",
          "tensors_sha256")
META_DIGEST = "prompt_json_sha256"  # the key, in the tensors' metadata, of prompt.json's SHA-256
# The largest gap |A z + p0 - prompt| (relative to the prompt's largest entry) at which the recovered z
# counts as regenerating the prompt: float32 rounding leaves ~1e-6.
Z_TOLERANCE = 1e-3


class PromptFileError(ValueError):
    """A prompt file, or an input to answer with it, that is refused (the message says why)."""


# ----------------------------------------------------------------------------- saving


def check_target(folder: str | Path, force: bool = False) -> None:
    """Refuse to write into a folder that already holds a prompt (unless ``force``), or into a file."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise PromptFileError(f"{folder} is a file, not a folder for a prompt")
    held = [name for name in FILES if (folder / name).exists()]
    if held and not force:
        raise PromptFileError(f"{folder} already holds a prompt ({', '.join(held)}); choose another folder or "
                              "add --force (force=True) to replace it")


def config_of(result: dict) -> BBTConfig:
    """The tuner's settings a result records, as the config class that made them (BBTv2's has ``search``)."""
    settings = dict(result["config"])
    return (BBTv2Config if "search" in settings else BBTConfig)(**settings)


def projections(service, config: BBTConfig, result: dict, deep: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    """``[(A_l, base_l)]``: each layer's regenerated ``A`` and what ``A z`` is added to (``p0`` at the input
    layer, zeros above), as the run built them from its seed (BBT: one pair)."""
    seed = result["seed"]
    if not deep:
        projection = projection_for(service, config, seed)
        return [(projection.A, projection.p0)]
    stats = result.get("layer_stats")
    As, p0 = deep_projections(service, config, seed, None if stats is None else np.asarray(stats))
    return [(A, p0 if layer == 0 else np.zeros_like(p0)) for layer, A in enumerate(As)]


def recover_z(prompt: np.ndarray, pairs: list) -> tuple[np.ndarray, float]:
    """``z`` (d,) or (layers, d) with ``A_l z_l + base_l`` = each layer's prompt, by least squares, and the
    largest gap left, relative to the prompt's largest entry."""
    layers = prompt[None] if prompt.ndim == 2 else prompt
    zs, gap = [], 0.0
    for p, (A, base) in zip(layers, pairs):
        target = (p - base).reshape(-1).astype(np.float64)
        z = np.linalg.lstsq(A.astype(np.float64), target, rcond=None)[0].astype(np.float32)
        rebuilt = (A @ z).reshape(base.shape) + base  # as the projection computes it, in float32
        gap = max(gap, float(np.abs(rebuilt - p).max()))
        zs.append(z)
    scale = max(float(np.abs(prompt).max()), 1e-12)
    return (zs[0] if prompt.ndim == 2 else np.stack(zs)), gap / scale


def peft_mismatch(kind: str, placement: str, deep: bool, head: list) -> str | None:
    """Why PEFT's prompt tuning would not answer as this prompt was tuned (``None``: it would).

    PEFT's prompt tuning (a causal LM) puts its virtual tokens' embeddings before the whole embedded
    input, special tokens included, and reads the next token after the input."""
    if deep:
        return ("BBTv2's deep prompt adds a vector to the hidden states entering every layer; PEFT has no "
                "counterpart (its prompt tuning puts vectors at the input only, its prefix tuning replaces keys "
                "and values): no PEFT adapter written")
    if kind != "causal":
        return ("this masked LM's prompt was tuned after its leading <s> and read at <mask>; PEFT's prompt "
                "tuning puts the virtual tokens before <s>: no PEFT adapter written")
    if placement != "prepend":
        return ("the prompt was tuned between the text and the question; PEFT puts virtual tokens before the "
                "whole input: no PEFT adapter written")
    if head:
        return (f"this tokenizer starts every input with {head} and the prompt was tuned after it; PEFT puts "
                "virtual tokens before it: no PEFT adapter written")
    return None


def tensor_digest(tensors: dict) -> str:
    """SHA-256 over the tensors (name, dtype, shape, bytes, in name order)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = np.ascontiguousarray(tensors[name])
        h.update(f"{name}:{t.dtype}:{t.shape}:".encode())
        h.update(t.tobytes())
    return h.hexdigest()


def _replace(path: Path, write) -> None:
    """Write a file through a temporary one beside it (a cut-off write never leaves half a file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # as any new file (safetensors' writer makes its files private to the owner)
    os.replace(tmp, path)


def write_peft(folder: Path, prompt: np.ndarray, model: str, layers: int) -> None:
    """The prompt as PEFT's prompt-tuning adapter: its config (the fields PEFT 0.21 writes) and its
    ``prompt_embeddings`` (L, hidden), the key PEFT loads into the virtual tokens' embedding."""
    config = {"peft_type": "PROMPT_TUNING", "task_type": "CAUSAL_LM", "num_virtual_tokens": int(prompt.shape[0]),
              "token_dim": int(prompt.shape[1]), "num_transformer_submodules": 1, "num_layers": layers,
              "num_attention_heads": None, "base_model_name_or_path": str(weights_folder(model)),
              "prompt_tuning_init": "RANDOM", "prompt_tuning_init_text": None, "tokenizer_name_or_path": None,
              "tokenizer_kwargs": None, "inference_mode": True, "revision": None, "modules_to_save": None,
              "auto_mapping": None, "peft_version": "0.21.2"}
    _replace(folder / PEFT_CONFIG, lambda p: p.write_text(json.dumps(config, indent=2)))
    _replace(folder / PEFT_WEIGHTS, lambda p: save_file({"prompt_embeddings": np.ascontiguousarray(prompt)}, str(p),
                                                        metadata={"format": "pt"}))


def save_prompt(result: dict, setup, folder: str | Path, force: bool = False) -> "SavedPrompt":
    """Write a tuner's result (BBT, BBTv2: it holds ``_prompt``) and the setup it ran on to ``folder``.

    Refused: a folder that holds a prompt (unless ``force``), a result that is not a tuned ``A z + p0``,
    and a prompt that this run's seed and settings do not regenerate. Returns the saved prompt as
    :func:`load_prompt` reads it."""
    folder = Path(folder)
    check_target(folder, force)
    if "_prompt" not in result or "intrinsic_dim" not in (result.get("config") or {}):
        raise PromptFileError(f"only a tuned prompt (bbt, bbtv2) is saved; a {result.get('method')} result holds "
                              "no A z + p0")
    service = setup.service
    prompt = np.ascontiguousarray(result["_prompt"], dtype=np.float32)
    deep = prompt.ndim == 3
    config = config_of(result)
    z, gap = recover_z(prompt, projections(service, config, result, deep))
    if gap > Z_TOLERANCE:
        raise PromptFileError(f"the tuned prompt is not A z + p0 for the A this run's seed and settings regenerate "
                              f"(a gap of {gap:.2g} of its scale): its z cannot be recorded")
    head = service.token_strings(setup.train.head) if setup.train.head else []
    why_not = peft_mismatch(service.kind, setup.placement, deep, head)
    tensors = {"prompt": prompt, "z": np.ascontiguousarray(z)}
    scores = {k: result[k] for k in ("best_dev_acc", "test_accuracy", "test_f1", "calls", "k", "test_size")
              if k in result}
    D, d = prompt[0].size if deep else prompt.size, z.shape[-1]
    meta = {
        "format": FORMAT, "method": result["method"], "task": result["task"], "classes": list(setup.task.classes),
        "metric": setup.task.metric, "template": setup.verbalizer.template,
        "label_words": list(setup.verbalizer.words), "placement": setup.placement, "kind": service.kind,
        "head": head, "model": service.model_name, "weights_sha256": weights_digest(service.model_name),
        "hidden_size": service.hidden_size, "num_layers": service.num_layers, "seed": result["seed"],
        "settings": result["config"],
        "projection": {"regenerated_by": "bbt_mini.methods.bbtv2.deep_projections" if deep
                       else "bbt_mini.methods.bbt.projection_for", "sampler": config.sampler, "p0": config.p0,
                       "A": [D, d], "layers": len(prompt) if deep else 1, "layer_stats": result.get("layer_stats"),
                       "z_gap": gap},
        "shapes": {name: list(t.shape) for name, t in tensors.items()}, "scores": scores,
        "dtype": result.get("dtype"), "device": result.get("device"), "versions": versions(),
        "peft": {"written": why_not is None, "why_not": why_not}, "tensors_sha256": tensor_digest(tensors),
    }
    text = json.dumps(meta, indent=2)
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(text.encode()).hexdigest()
    _replace(folder / TENSORS, lambda p: save_file(tensors, str(p), metadata={META_DIGEST: digest}))
    _replace(folder / META, lambda p: p.write_text(text))
    if why_not is None:
        write_peft(folder, prompt, service.model_name, service.num_layers)
    else:  # a forced save must not leave another prompt's adapter beside this one
        for name in (PEFT_CONFIG, PEFT_WEIGHTS):
            (folder / name).unlink(missing_ok=True)
    return load_prompt(folder)


# ----------------------------------------------------------------------------- loading


@dataclass
class SavedPrompt:
    """A prompt file read back: its description (``meta``, prompt.json), the soft prompt and ``z``."""

    folder: Path
    meta: dict
    prompt: np.ndarray  # (L, hidden), or (layers, L, hidden) for a deep prompt
    z: np.ndarray  # (d,), or (layers, d)

    @property
    def deep(self) -> bool:
        return self.prompt.ndim == 3

    @property
    def verbalizer(self) -> Verbalizer:
        return Verbalizer(self.meta["template"], tuple(self.meta["label_words"]))

    @property
    def fields(self) -> tuple[str, ...]:
        """The columns the template names: what a row to answer must have."""
        return self.verbalizer.fields

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.meta["classes"])


def load_prompt(folder: str | Path) -> SavedPrompt:
    """A prompt file written by :func:`save_prompt`; refused with the reason if a file is missing, damaged
    (not JSON, not safetensors, truncated), edited after saving, or its tensors' shapes are not the ones
    its description states."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PromptFileError(f"{folder}: no such folder (a prompt is a folder written by --save-prompt)")
    missing = [name for name in (META, TENSORS) if not (folder / name).is_file()]
    if missing:
        raise PromptFileError(f"{folder} is not a saved prompt: it lacks {missing}")
    raw = (folder / META).read_bytes()
    try:
        meta = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PromptFileError(f"{folder / META} is damaged: not valid JSON ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise PromptFileError(f"{folder / META} is not a prompt description of format {FORMAT!r}")
    missing = [key for key in NEEDED if key not in meta]
    if missing:
        raise PromptFileError(f"{folder / META} is damaged: it lacks {missing}")
    try:
        with safe_open(str(folder / TENSORS), "np") as f:
            stored = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise PromptFileError(f"{folder / TENSORS} is damaged (truncated, or not safetensors): {err}") from None
    if set(tensors) != {"prompt", "z"}:
        raise PromptFileError(f"{folder / TENSORS} holds {sorted(tensors)}, not the prompt and z")
    for name, t in tensors.items():
        if list(t.shape) != meta["shapes"][name]:
            raise PromptFileError(f"{folder / TENSORS} holds a {name} of shape {list(t.shape)}, but {META} states "
                                  f"{meta['shapes'][name]}: the two files do not belong together")
    if tensor_digest(tensors) != meta.get("tensors_sha256"):
        raise PromptFileError(f"{folder / TENSORS} was changed after it was saved: its tensors' SHA-256 is not the "
                              f"one {META} records")
    if stored.get(META_DIGEST) != hashlib.sha256(raw).hexdigest():
        raise PromptFileError(f"{folder / META} was changed after it was saved: its SHA-256 is not the one "
                              f"{TENSORS} records")
    return SavedPrompt(folder, meta, tensors["prompt"], tensors["z"])


def check_model(saved: SavedPrompt, model: str | None = None) -> str:
    """The model to answer with (default: the one tuned on), checked before it loads: its kind, hidden size
    and layers must fit the prompt, and its weights must be the ones tuned on (their SHA-256)."""
    model = str(model or saved.meta["model"])
    kind = model_kind(model)
    config = AutoConfig.from_pretrained(weights_folder(model))
    want = (saved.meta["kind"], saved.prompt.shape[-1], *(saved.prompt.shape[:1] if saved.deep else ()))
    have = (kind, config.hidden_size, *((config.num_hidden_layers,) if saved.deep else ()))
    if want != have:
        raise PromptFileError(f"the prompt (a {want[0]} LM's, shape {list(saved.prompt.shape)}) does not fit {model} "
                              f"(a {kind} LM, hidden size {config.hidden_size}, {config.num_hidden_layers} layers)")
    digest = weights_digest(model)
    if digest != saved.meta["weights_sha256"]:
        raise PromptFileError(f"the prompt was tuned on {saved.meta['model']} (weights SHA-256 "
                              f"{saved.meta['weights_sha256'][:16]}...), but {model}'s weights differ "
                              f"({digest[:16]}...): a soft prompt means nothing to other weights; refused")
    return model


# ----------------------------------------------------------------------------- the rows to answer


def read_rows(path: str | Path, saved: SavedPrompt, labelled: bool = False) -> tuple[list, list | None]:
    """The rows of a CSV (the template's columns, whitespace normalised as for tuning) and, if ``labelled``,
    their classes' indices from its ``label`` column. Refused: a missing column, an empty file, a label the
    prompt does not know (naming its line)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    need = [*saved.fields, *(["label"] if labelled else [])]
    index = {c: i for i, c in enumerate(saved.classes)}
    rows, labels = [], []
    with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: a spreadsheet's byte-order mark is no column
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        if not columns:
            raise PromptFileError(f"{path} is empty: no header, no rows")
        missing = [c for c in need if c not in columns]
        if missing:
            raise PromptFileError(f"{path} lacks column(s) {missing} (the template {saved.meta['template']!r} names "
                                  f"{list(saved.fields)}{' and evaluation needs label' if labelled else ''}); "
                                  f"it has {columns}")
        for line, row in enumerate(reader, start=2):
            if labelled:
                if row["label"] not in index:
                    raise PromptFileError(f"{path}, line {line}: label {row['label']!r} is not one the prompt knows: "
                                          f"{list(saved.classes)}")
                labels.append(index[row["label"]])
            rows.append({f: " ".join((row[f] or "").split()) for f in saved.fields})
    if not rows:
        raise PromptFileError(f"{path} has a header but no rows")
    return rows, (labels if labelled else None)


def text_rows(text: str, saved: SavedPrompt) -> list:
    """One row from a text: it fills the template's one column (a template naming several needs a CSV)."""
    if len(saved.fields) != 1:
        raise PromptFileError(f"--text fills one column, but the template {saved.meta['template']!r} names "
                              f"{list(saved.fields)}: give a CSV with those columns")
    if not text.strip():
        raise PromptFileError("--text is empty")
    return [{saved.fields[0]: " ".join(text.split())}]


# ----------------------------------------------------------------------------- answering


def service_for(saved: SavedPrompt, model: str | None = None, service: str | None = None, device=None, dtype=None,
                api_key: str | None = None):
    """The black box to answer with: in-process (the model loads here), or the remote server at ``service``
    (the client holds the tokenizer and embedding table). The model is checked first (:func:`check_model`)."""
    if service is not None and saved.deep:
        raise PromptFileError("a deep prompt (BBTv2) adds to the hidden states inside the model, which an "
                              "OpenAI-compatible server does not expose: answer it in-process (without --service)")
    model = check_model(saved, model)
    if service is not None:
        return remote_service(service, saved.verbalizer.words, model, api_key=api_key)
    return BlackBox(load_model(model, device=device, dtype=dtype), saved.verbalizer.words)


def answer(saved: SavedPrompt, service, rows: list, tuned: bool = True, batch_size: int = 32,
           progress: bool = True) -> np.ndarray:
    """(rows, classes) label-word logits of the tuned prompt (``tuned=False``: the manual prompt, the
    template alone) on ``rows``, ``batch_size`` rows per request, with a progress bar."""
    if batch_size < 1:
        raise PromptFileError(f"batch_size must be at least 1; got {batch_size}")
    task = Task("saved prompt", saved.classes, {saved.meta["kind"]: saved.verbalizer}, lambda: {}, source="csv")
    prompt = np.asarray(saved.prompt)[None] if tuned else no_prompt(service)
    out = []
    desc = "tuned prompt" if tuned else "manual prompt"
    with tqdm(total=len(rows), unit="row", desc=desc, disable=not progress, mininterval=1.0) as bar:
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            texts = texts_for(task, saved.verbalizer, chunk, service, saved.meta["placement"])
            out.append(service(prompt, service.encode(texts, [0] * len(chunk))).logits[0])
            bar.update(len(chunk))
    return np.concatenate(out)


def predictions(saved: SavedPrompt, rows: list, logits: np.ndarray) -> list[dict]:
    """Per row: its columns, the class answered and each class's probability (softmax over the label words)."""
    probs = softmax(np.asarray(logits, dtype=np.float64))
    return [{**row, "class": saved.classes[int(p.argmax())], **{f"p_{c}": float(q) for c, q in zip(saved.classes, p)}}
            for row, p in zip(rows, probs)]


def write_csv(table: list[dict], out) -> None:
    """``table`` (dicts with the same keys) as CSV to a path or an open text stream."""
    def write(f):
        writer = csv.DictWriter(f, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    def to_file(path: Path) -> None:
        with open(path, "w", newline="", encoding="utf-8") as f:
            write(f)
    if isinstance(out, (str, Path)):
        _replace(Path(out), to_file)
    else:
        write(out)


def evaluate_rows(saved: SavedPrompt, service, rows: list, labels: list, batch_size: int = 32,
                  progress: bool = True) -> dict:
    """The tuned and the manual prompt on the same labelled rows: each side's accuracy (and F1 where the task
    reports it) and answers, and the verdict on the difference, paired by row
    (:func:`bbt_mini.core.stats.fixed_pair`; its ``sentence`` says it in words)."""
    labels = np.asarray(labels, dtype=np.int64)
    rows_id = test_set_id([{**row, "label": int(y)} for row, y in zip(rows, labels)])

    def side(name: str, logits: np.ndarray) -> dict:
        answers = logits.argmax(-1)
        out = {"method": name, "test_accuracy": float((answers == labels).mean()),
               "test_answers": answers.tolist(), "test_labels": labels.tolist(), "test_set": rows_id}
        if saved.meta["metric"] == "f1":
            out["test_f1"] = float(f1(logits[None], labels)[0])
        return out

    tuned = side("tuned prompt", answer(saved, service, rows, True, batch_size, progress))
    manual = side("manual prompt", answer(saved, service, rows, False, batch_size, progress))
    comparison = say(fixed_pair(tuned, manual), tuned, manual, "the tuned prompt", "the manual prompt", "accuracy")
    return {"rows": len(rows), "tuned": tuned, "manual": manual, "comparison": dataclasses.asdict(comparison)}
