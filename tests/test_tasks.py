"""Tasks and k-shot splits: determinism, disjointness, balance, bad input, user CSVs."""
import pytest

from bbt_mini.data.splits import kshot_split, load_data
from bbt_mini.data.tasks import OFFLINE_TASKS, csv_task, get_task
from bbt_mini.lm.loading import load_model, offline_model_folder
from bbt_mini.run.prepare import prepare


@pytest.mark.parametrize("name", OFFLINE_TASKS)
def test_split_is_seeded_balanced_and_disjoint(name):
    task = get_task(name)
    a, b = kshot_split(task, 4, seed=3, test_size=50), kshot_split(task, 4, seed=3, test_size=50)
    assert a.train == b.train and a.dev == b.dev and a.test == b.test
    c = kshot_split(task, 4, seed=4, test_size=50)
    assert c.train != a.train and c.test == a.test  # another seed: new shots, same test set
    for part in (a.train, a.dev):
        counts = [sum(ex["label"] == k for ex in part) for k in range(len(task.classes))]
        assert counts == [4] * len(task.classes)
    texts = [set(tuple(ex[f] for f in ("text", "text1", "text2") if f in ex) for ex in part)
             for part in (a.train, a.dev, a.test)]
    assert not (texts[0] & texts[1]) and not (texts[0] & texts[2]) and not (texts[1] & texts[2])


def test_full_test_set_is_used_without_test_size():
    split = kshot_split("rotten_tomatoes", 2, seed=1)
    assert len(split.test) == 2000 and split.info["test_total"] == 2000


def test_k_larger_than_a_class_is_refused():
    with pytest.raises(ValueError, match=r"class '\w+' of bbc_news has \d+ training examples; k=400 needs 800"):
        kshot_split("bbc_news", 400, seed=1)


def test_unknown_task_lists_the_choices():
    with pytest.raises(ValueError, match="unknown task 'sst3'.*rotten_tomatoes.*sst2"):
        get_task("sst3")


def test_hub_task_without_hub_says_so():
    with pytest.raises(RuntimeError, match="Hugging Face hub|datasets"):
        kshot_split("sst2", 2, seed=1)


def test_every_registered_verbalizer_names_fields_and_words():
    for task in (get_task(n) for n in OFFLINE_TASKS + ("sst2", "rte", "snli", "dbpedia")):
        for key, v in task.verbalizers.items():
            assert len(v.words) == len(task.classes), (task.name, key)
            assert v.fields, (task.name, key)
            assert ("<mask>" in v.template) == key.startswith("masked"), (task.name, key)


@pytest.mark.real_model
def test_offline_label_words_are_single_tokens_for_smollm2():
    """SmolLM2's tokenizer alone (the weights are not needed): each causal label word is one token,
    by the rule ``LM.token_id`` applies."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(offline_model_folder("smollm2"))
    split = {w: tokenizer(w, add_special_tokens=False)["input_ids"] for name in OFFLINE_TASKS
             for key, v in get_task(name).verbalizers.items() if key.startswith("causal") for w in v.words}
    assert len(split) >= 4 and {w: ids for w, ids in split.items() if len(ids) != 1} == {}


def _write(tmp_path, text):
    path = tmp_path / "mine.csv"
    path.write_text(text)
    return path


def test_csv_task_end_to_end(tmp_path, tiny_causal):
    rows = "\n".join(f"a {'lovely' if i % 2 else 'awful'} film number {i},{'pos' if i % 2 else 'neg'}"
                     for i in range(40))
    path = _write(tmp_path, "review,label\n" + rows + "\n")
    task = csv_task(path, "Review: {review} It was", {"neg": " bad", "pos": " great"}, name="mine")
    setup = prepare(task, tiny_causal, seed=2, profile="small", k=3, test_size=6)
    assert len(setup.train) == 6 and len(setup.dev) == 6 and len(setup.test) == 6
    assert setup.verbalizer.words == (" bad", " great")


def test_csv_missing_column_and_unknown_label(tmp_path):
    path = _write(tmp_path, "text,label\nnice,pos\n")
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['review'\]"):
        csv_task(path, "Review: {review}", {"neg": " bad", "pos": " great"})
    path = _write(tmp_path, "text,label\nnice,pos\nmeh,neutral\n")
    with pytest.raises(ValueError, match="line 3: label 'neutral' is not one of"):
        csv_task(path, "Review: {text}", {"neg": " bad", "pos": " great"})
    with pytest.raises(ValueError, match="names no column"):
        csv_task(path, "Review:", {"neg": " bad", "pos": " great"})


def test_unknown_model_lists_the_choices():
    with pytest.raises(ValueError, match="unknown model 'no-such-model'.*smollm2"):
        load_model("no-such-model", device="cpu")


def test_a_csv_named_like_a_built_in_task_cannot_replace_it(tmp_path):
    path = tmp_path / "imdb.csv"
    path.write_text("text,label\nnice,pos\nbad,neg\n")
    with pytest.raises(ValueError, match="would replace the offline task"):
        csv_task(path, "Review: {text}", {"neg": " bad", "pos": " great"})
    assert get_task("imdb").source == "offline"
    assert csv_task(path, "Review: {text}", {"neg": " bad", "pos": " great"}, name="my_imdb").name == "my_imdb"


def test_a_csv_registered_again_after_an_edit_is_read_afresh(tmp_path):
    import gc


    path = tmp_path / "edited.csv"
    for round_ in range(5):  # the old cache, keyed by id(loader), returned stale rows once an id was reused
        path.write_text("text,label\n" + "".join(f"row {round_} {i},{'pos' if i % 2 else 'neg'}\n" for i in range(8)))
        task = csv_task(path, "Review: {text}", {"neg": " bad", "pos": " great"})
        data = load_data(task)
        rows = data["train"] + data["test"]
        assert {ex["text"].split()[1] for ex in rows} == {str(round_)}
        del task, data, rows
        gc.collect()


def test_bbc_pairs_are_balanced_and_the_same_on_every_load():
    from bbt_mini.data.loaders import PAIR_WORDS, _bbc_pairs

    task = get_task("bbc_pairs")
    pool = task.loader()["pool"]
    assert pool == _bbc_pairs(PAIR_WORDS)()["pool"]  # a fresh loader builds the very same pairs
    labels = [ex["label"] for ex in pool]
    assert labels.count(0) == labels.count(1) > 400
    data = load_data(task)
    for part in (data["train"], data["test"]):
        assert sum(ex["label"] for ex in part) * 2 == len(part)
    assert len(data["test"]) == task.test_pool


def test_bbc_pairs_negatives_pair_two_articles_of_one_topic_and_positives_one():
    from bbt_mini.data.loaders import _bbc_articles

    by_id = {a[1]: a for a in _bbc_articles()}
    for ex in get_task("bbc_pairs").loader()["pool"]:
        arts = [by_id[i] for i in ex["articles"]]
        assert ex["text1"] == arts[0][2] and arts[-1][3].startswith(ex["text2"])  # headline, then paragraph
        assert len(arts) == 2 - ex["label"]  # a positive uses one article, a negative two
        assert {a[0] for a in arts} == {ex["topic"]}  # a negative's paragraph comes from the same topic
        if ex["label"] == 0:
            assert arts[0][3] != arts[1][3] and arts[0][2] != arts[1][2]


def test_no_bbc_article_is_in_both_the_training_and_the_test_pool():
    from bbt_mini.data.loaders import PAIR_WORDS

    data = load_data(get_task("bbc_pairs"))
    train = [i for ex in data["train"] for i in ex["articles"]]
    test = [i for ex in data["test"] for i in ex["articles"]]
    assert len(set(train)) == len(train) and len(set(test)) == len(test)  # each article in one example
    assert not set(train) & set(test)
    paragraphs = [{ex["text2"] for ex in part} for part in (data["train"], data["test"])]
    assert max(len(p.split()) for p in paragraphs[0] | paragraphs[1]) <= PAIR_WORDS
    assert not paragraphs[0] & paragraphs[1]
