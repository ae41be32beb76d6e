"""Instruction templates: determinism, literal formats, few-shot exemplars, options, errors."""
import json
import os
import re

import pytest
import seqio

import t5mtl.data.registry  # noqa: F401  (registers tasks)
from t5mtl.data import data_dir as data_dir_lib
from t5mtl.data import instruction_tasks, synthetic, task_info, template_tables, templates
from t5mtl.data.templates import Template, TaskTemplates
from t5mtl.errors import T5mtlError

LENGTHS = {"inputs": 512, "targets": 128}
T = Template


@pytest.fixture(autouse=True)
def _data_dir(shared_data_dir):
    data_dir_lib.set_data_dir(shared_data_dir)
    yield
    data_dir_lib.set_data_dir(None)


def _examples(name, split="validation", n=1, lengths=LENGTHS):
    ds = seqio.get_mixture_or_task(name).get_dataset(lengths, split=split, shuffle=False)
    return list(ds.take(n).as_numpy_iterator())


def _text(ex, key="inputs"):
    return ex[f"{key}_pretokenized"].decode()


_REGISTERED = set()


@pytest.fixture(scope="module", autouse=True)
def _remove_test_tasks():
    yield
    for name in _REGISTERED:
        instruction_tasks.remove_instruction_task(name)


def _fresh(name, *args, **kwargs):
    """Registers a throw-away variant task (replacing one of the same name)."""
    _REGISTERED.add(name)
    return instruction_tasks.register_instruction_task(*args, name=name, overwrite=True, **kwargs)


# ---------------------------------------------------------------- tables

def test_every_real_task_has_five_templates_and_every_variant_is_registered():
    for table in template_tables.REAL_TABLES:
        assert len(table.templates) >= 5, table.task
        assert len({t.inputs for t in table.templates}) == len(table.templates)
        if table.inverse_templates:
            assert len(table.inverse_templates) >= 3
    names = set(seqio.TaskRegistry.names())
    for table in template_tables.tables().values():
        splits = seqio.TaskRegistry.get(table.task).splits
        for variant in templates.VARIANTS:
            assert (f"{table.task}_{variant}" in names) == table.has_variant(variant, splits)
    assert "superglue_cb_fs" in names and "glue_qnli_fs" not in names  # qnli: no train split
    assert "synth_add_cot" in names and "synth_add_opt" not in names
    assert len(instruction_tasks.instruction_task_names("cot")) == sum(
        1 for t in synthetic.TASKS if t.explain) >= 12


# ---------------------------------------------------------------- determinism

def test_rendering_is_deterministic_and_uses_every_template():
    first = _examples("synth_add_zs", n=200)
    again = _examples("synth_add_zs", n=200)
    assert [(_text(a), a["_template_idx"]) for a in first] == \
        [(_text(b), b["_template_idx"]) for b in again]
    idx = [int(e["_template_idx"]) for e in first]
    assert set(idx) == set(range(len(template_tables.SYNTHETIC_TEMPLATES)))
    for e in first:
        template = template_tables.SYNTHETIC_TEMPLATES[int(e["_template_idx"])]
        raw = {k: e[k].decode() for k in ("instruction", "query", "answer")}
        assert template.render(raw) == {"inputs": _text(e), "targets": _text(e, "targets")}
        assert e["_task_name"] == b"synth_add_zs" and e["_variant"] == b"zs"
    # The options variant draws the same template for the same example.
    opt = _examples("synth_parity_opt", n=20)
    zs = _examples("synth_parity_zs", n=20)
    for o, z in zip(opt, zs):
        assert o["_template_idx"] == z["_template_idx"]
        assert _text(o) == _text(z) + "\n\nAnswer with one of: even | odd"
    # Another seed draws other templates.
    _fresh("synth_add_zs_seed1", "synth_add", "zs", seed=1)
    other = _examples("synth_add_zs_seed1", n=50)
    assert [e["_template_idx"] for e in other] != [e["_template_idx"] for e in first[:50]]


# ---------------------------------------------------------------- literal formats

def test_literal_zero_shot():
    (ex,) = _examples("synth_reverse_letters_zs")
    assert (int(ex["_template_idx"]), _text(ex), _text(ex, "targets")) == (
        2, "Instruction: Reverse the letters:\nInput: bajaboii\nOutput:", "iiobajab")
    (ex,) = _examples("superglue_rte_zs")
    assert int(ex["_template_idx"]) == 0
    assert _text(ex) == (
        "Dana Reeve, the widow of the actor Christopher Reeve, has died of lung cancer at age "
        "44, according to the Christopher Reeve Foundation.\n\nDoes this mean that "
        "\"Christopher Reeve had an accident.\" is true?")
    assert _text(ex, "targets") == "no"  # not_entailment, verbalized


def test_literal_few_shot():
    (ex,) = _examples("synth_sort_letters_fs")
    assert int(ex["_num_exemplars"]) == 3 and int(ex["_template_idx"]) == 0
    assert _text(ex) == ("Sort the letters: bjdm\nbdjm\n\n###\n\nSort the letters: fenbhd\n"
                         "bdefhn\n\n###\n\nSort the letters: cnikj\ncijkn\n\n###\n\n"
                         "Sort the letters: maidk")
    assert _text(ex, "targets") == "adikm"


def test_literal_options_and_exact_label_set():
    (ex,) = _examples("synth_parity_opt")
    assert _text(ex) == ("Input: 472\nTask: Is the number even or odd?\nAnswer:\n\n"
                         "Answer with one of: even | odd")
    (ex,) = _examples("glue_sst2_opt")
    assert _text(ex) == ("Decide whether this movie-review snippet is positive or negative: it 's "
                         "a charming and often affecting journey .\n\n"
                         "Answer with one of: negative | positive")
    for name in instruction_tasks.instruction_task_names("opt"):
        info = task_info.get_task_info(name)
        base = task_info.get_task_info(info.base_task)
        options = instruction_tasks.answer_options(name)
        assert len(options) == len(set(options)) == len(base.label_names)
        for ex in _examples(name, n=8):
            listed = _text(ex).rsplit(templates.OPTIONS_PREFIX, 1)[1].split(" | ")
            assert listed == list(options), name
            assert _text(ex, "targets") in options


def test_literal_chain_of_thought():
    (ex,) = _examples("synth_add_cot")
    assert _text(ex) == "Instruction: Add the numbers:\nInput: 60 + 78\nExplain, then answer."
    assert _text(ex, "targets") == "60 + 70 = 130, 130 + 8 = 138. Answer: 138"
    (ex,) = _examples("synth_parity_cot")
    assert _text(ex) == "472\n\nIs the number even or odd? Show the steps first."
    assert _text(ex, "targets") == "the last digit 2 is even. Answer: even"
    task = seqio.get_mixture_or_task("synth_parity_cot")
    assert task.postprocess_fn(ex["targets_pretokenized"], example=ex, is_target=True) == "even"
    assert task.postprocess_fn(b"the last digit is 7. Answer: odd") == "odd"


def test_rationales_agree_with_answers():
    for t in synthetic.TASKS:
        if t.explain is None or t.labels:
            continue
        for e in synthetic.generate(t, "validation", n=100, rationale=True):
            numbers = re.findall(r"\d+", e["rationale"])
            if e["answer"] == "0" and "no " in e["rationale"]:
                continue  # "there are no vowels"
            assert numbers[-1] == e["answer"], e
    base = list(synthetic.generate(synthetic.get("add"), "validation", n=5))
    with_r = list(synthetic.generate(synthetic.get("add"), "validation", n=5, rationale=True))
    assert [{k: v for k, v in e.items() if k != "rationale"} for e in with_r] == base


def test_literal_input_inversion():
    (ex,) = _examples("synth_uppercase_inv")
    assert (_text(ex), _text(ex, "targets")) == (
        "Instruction: Write it in small letters:\nInput: DOG CUP RUG\nOutput:", "dog cup rug")
    (ex,) = _examples("multi30k_en_de_inv")
    assert _text(ex) == ("Give an English translation of this image caption: Eine Gruppe von "
                         "Männern lädt Baumwolle auf einen Lastwagen")
    assert _text(ex, "targets") == "A group of men are loading cotton onto a truck"
    (ex,) = _examples("glue_sst2_inv")
    assert (_text(ex), _text(ex, "targets")) == (
        "Give an example of a positive remark about a film.",
        "it 's a charming and often affecting journey .")
    assert task_info.get_task_info("multi30k_en_de_inv").metrics == ("bleu",)


# ---------------------------------------------------------------- few-shot exemplars

Q_TABLE = TaskTemplates("synth_add", (T("Q: {query}", "{answer}"),))


def _shots(text):
    *shots, query = text.split(templates.SHOT_SEPARATOR)
    return [s.split("\n") for s in shots], query


@pytest.mark.parametrize("split", ["validation", "train"])
def test_exemplars_come_from_train_and_never_the_example(split):
    _fresh("synth_add_fs_q", "synth_add", "fs", Q_TABLE, k=4)
    task = synthetic.get("add")
    for ex in _examples("synth_add_fs_q", split=split, n=150):
        shots, query = _shots(_text(ex))
        assert int(ex["_num_exemplars"]) == len(shots) == 4
        q = query[len("Q: "):]
        assert synthetic.split_of(task, q) == split
        for shot_query, shot_answer in shots:
            shot_q = shot_query[len("Q: "):]
            assert synthetic.split_of(task, shot_q) == "train"
            assert shot_q != q
            a, b = (int(x) for x in shot_q.split(" + "))
            assert shot_answer == str(a + b)
        assert len({s[0] for s in shots}) == 4


def test_real_exemplars_come_from_the_train_file(shared_data_dir):
    def premises(name):
        with open(os.path.join(shared_data_dir, "superglue_cb", name)) as f:
            return {json.loads(line)["premise"] for line in f}
    train, val = premises("train.jsonl"), premises("val.jsonl")
    table = TaskTemplates("superglue_cb", (T("P: {premise}\nH: {hypothesis}", "{label}"),),
                          label_field="label", verbalizers=("yes", "no", "maybe"))
    _fresh("superglue_cb_fs_q", "superglue_cb", "fs", table, k=2)
    for ex in _examples("superglue_cb_fs_q", n=20, lengths={"inputs": 4096, "targets": 8}):
        blocks = _text(ex).split(templates.SHOT_SEPARATOR)
        assert len(blocks) == 3
        shot_premises = [b.split("\nH: ")[0].removeprefix("P: ") for b in blocks[:2]]
        query_premise = blocks[2].split("\nH: ")[0].removeprefix("P: ")
        assert query_premise in val
        assert all(p in train and p != query_premise for p in shot_premises)


def test_exemplars_are_dropped_until_the_inputs_fit():
    _fresh("synth_add_fs_q", "synth_add", "fs", Q_TABLE, k=4)
    full = _examples("synth_add_fs_q", n=40, lengths={"inputs": 512, "targets": 8})
    limit = 52
    pruned = _examples("synth_add_fs_q", n=40, lengths={"inputs": limit, "targets": 8})
    counts = set()
    for f, p in zip(full, pruned):
        shots, query = _shots(_text(f))
        j = int(p["_num_exemplars"])
        counts.add(j)
        kept = templates.SHOT_SEPARATOR.join(["\n".join(s) for s in shots[:j]] + [query])
        assert _text(p) == kept
        assert len(kept.encode()) + 1 <= limit  # byte vocabulary, plus EOS
        if j < 4:
            longer = templates.SHOT_SEPARATOR.join(["\n".join(s) for s in shots[:j + 1]]
                                                   + [query])
            assert len(longer.encode()) + 1 > limit
        assert len(p["inputs"]) <= limit
    assert counts <= {1, 2} and len(counts) == 2


# ---------------------------------------------------------------- metrics

def test_verbalized_answers_map_back_to_labels():
    rte = seqio.get_mixture_or_task("superglue_rte_zs")
    assert [rte.postprocess_fn(x) for x in (b"yes", b"no", b"maybe")] == [0, 1, -1]
    cb = seqio.get_mixture_or_task("superglue_cb_opt")
    assert [cb.postprocess_fn(x) for x in (b"yes", b"no", b"maybe")] == [0, 1, 2]
    assert [f.__name__ for f in cb.metric_fns] == \
        [f.__name__ for f in seqio.get_mixture_or_task("superglue_cb").metric_fns]
    stsb = seqio.get_mixture_or_task("glue_stsb_fs")
    assert stsb.postprocess_fn(b"3.8") == pytest.approx(3.8)
    assert instruction_tasks.answer_options("superglue_cb_zs") == ("yes", "no", "maybe")
    assert instruction_tasks.answer_options("synth_parity_zs") == ("even", "odd")
    (ex,) = _examples("superglue_rte_zs")
    targets = [rte.postprocess_fn(ex["targets_pretokenized"], example=ex, is_target=True)]
    (accuracy,) = rte.metric_fns
    assert accuracy(targets, [rte.postprocess_fn(b"no")]) == {"accuracy": 100.0}


# ---------------------------------------------------------------- errors

def test_template_with_a_missing_field_is_an_error():
    bad = TaskTemplates("synth_add", (T("{instruction} {query}", "{answer}"),
                                      T("{instruction} {qeury}", "{answer}")))
    with pytest.raises(T5mtlError, match=r"template 1 of 'synth_add_bad' \('\{instruction\} "
                                         r"\{qeury\}' -> '\{answer\}'\) references missing "
                                         r"field 'qeury'"):
        _fresh("synth_add_bad", "synth_add", "zs", bad)
    assert "synth_add_bad" not in seqio.TaskRegistry.names()


def test_k_larger_than_the_train_split_is_an_error():
    _fresh("superglue_cb_fs_big", "superglue_cb", "fs", k=300)
    with pytest.raises(T5mtlError, match=r"k=300 exemplars asked, but the train split of "
                                         r"'superglue_cb' has only 250 distinct examples"):
        _examples("superglue_cb_fs_big")


def test_other_bad_variants_are_errors():
    with pytest.raises(T5mtlError, match="'glue_qnli' has no train split to draw few-shot"):
        instruction_tasks.register_instruction_task("glue_qnli", "fs")
    with pytest.raises(T5mtlError, match="'glue_stsb' is not a classification task"):
        instruction_tasks.register_instruction_task("glue_stsb", "opt")
    with pytest.raises(T5mtlError, match="unknown instruction variant 'fewshot'"):
        instruction_tasks.register_instruction_task("glue_stsb", "fewshot")
    with pytest.raises(T5mtlError, match="'dialogsum' has no cot templates"):
        instruction_tasks.register_instruction_task("dialogsum", "cot")
    _fresh("synth_add_fs_q", "synth_add", "fs", Q_TABLE, k=4)
    assert "synth_add_fs_q" in instruction_tasks.instruction_task_names("fs", ["synth_add"], custom=True)
    assert instruction_tasks.instruction_task_names("fs", ["synth_add"]) == ["synth_add_fs"]
    with pytest.raises(T5mtlError, match="k must be a positive number of exemplars, got 0"):
        instruction_tasks.register_instruction_task("synth_add", "fs", k=0, name="synth_add_fs0")
    with pytest.raises(T5mtlError, match="unknown task or mixture 'glue_sst'; did you mean"):
        instruction_tasks.register_instruction_task("glue_sst", "zs")
    with pytest.raises(T5mtlError, match="no instruction templates for task 'synth_ad'"):
        template_tables.get("synth_ad")
