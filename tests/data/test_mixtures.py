"""The built-in mixtures (exmix, ext5_pretrain, flan_mix) and the generalization splits."""
import os

import gin
import pytest
import seqio

import t5mtl.data.registry  # noqa: F401  (registers tasks and mixtures)
from t5mtl.data import data_dir as data_dir_lib
from t5mtl.data import mixing, mixtures, synthetic, task_info, templates
from t5mtl.errors import T5mtlError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REAL_TRAIN_COUNTS = {  # rows of each train split, from ../shared/data/*/PROVENANCE.md
    "glue_sst2": 67349, "glue_cola": 8551, "glue_stsb": 5749, "superglue_cb": 250,
    "superglue_rte": 2490, "multi30k_en_de": 29000}
SYNTH = [t.task_name for t in synthetic.TASKS]


@pytest.fixture(autouse=True)
def _data_dir(shared_data_dir):
    data_dir_lib.set_data_dir(shared_data_dir)
    yield
    data_dir_lib.set_data_dir(None)


def _expected_exmix(cap):
    counts = {**REAL_TRAIN_COUNTS, **{n: synthetic.SPLIT_SIZES["train"] for n in SYNTH}}
    rates = {n: min(c, cap) for n, c in counts.items()}
    total = sum(rates.values())
    return {n: r / total for n, r in rates.items()}


def test_image_and_video_tasks_stay_out_of_the_text_to_text_mixtures():
    # ExMix is text to text: registering CLIP's and LAVENDER's tasks (pixels
    # beside the text) must not change it, nor break the mixtures built from it.
    from t5mtl.data import vision_tasks
    before = mixtures.supervised_tasks()
    vision_tasks.register()
    try:
        assert mixtures.supervised_tasks() == before
        mixtures.register(overwrite=True)
        assert "clip_digits" not in mixing.mixture_proportions("exmix")
    finally:
        vision_tasks.unregister()
        mixtures.register(overwrite=True)


def test_exmix_is_examples_proportional_over_every_supervised_task():
    assert mixtures.supervised_tasks() == sorted([*REAL_TRAIN_COUNTS, *SYNTH])
    props = mixing.mixture_proportions("exmix")
    assert props == pytest.approx(_expected_exmix(3000), rel=1e-12)
    assert props["superglue_cb"] == pytest.approx(250 / (250 + 2490 + 37 * 3000))
    name = mixtures.register_exmix(name="exmix_cap1000", cap=1000)
    assert mixing.mixture_proportions(name) == pytest.approx(_expected_exmix(1000), rel=1e-12)
    seqio.MixtureRegistry.remove(name)


def test_ext5_pretrain_mixes_corpus_and_exmix_two_to_one():
    props = mixing.mixture_proportions("ext5_pretrain")
    assert props["raw_text_en_span_corruption"] == pytest.approx(2 / 3)
    exmix = _expected_exmix(3000)
    for name, share in exmix.items():
        assert props[name] == pytest.approx(share / 3)
    name = mixtures.register_ext5_pretrain(name="ext5_test", ratio=3)
    assert mixing.mixture_proportions(name)["raw_text_en_span_corruption"] == pytest.approx(0.75)
    seqio.MixtureRegistry.remove(name)
    with pytest.raises(T5mtlError, match="ratio .* must be positive, got 0"):
        mixtures.register_ext5_pretrain(name="ext5_test", ratio=0)


def test_flan_mix_weights_its_variants():
    flan = seqio.get_mixture_or_task("flan_mix")
    props = mixing.mixture_proportions(flan)
    by_variant = {}
    for name, share in props.items():
        variant = task_info.get_task_info(name).variant
        by_variant[variant] = by_variant.get(variant, 0.0) + share
    assert by_variant == pytest.approx(mixtures.FLAN_VARIANT_WEIGHTS)
    # Inside a variant: examples-proportional with the cap, from the base counts.
    opt = mixing.mixture_proportions("flan_mix_opt")
    classification = {"glue_sst2": 3000, "glue_cola": 3000, "superglue_cb": 250,
                      "superglue_rte": 2490, **{t.task_name: 3000 for t in synthetic.TASKS
                                                 if t.labels}}
    total = sum(classification.values())
    assert opt == pytest.approx({f"{n}_opt": r / total for n, r in classification.items()})
    assert set(mixing.mixture_proportions("flan_mix_cot")) == {
        f"{t.task_name}_cot" for t in synthetic.TASKS if t.explain}
    name = mixtures.register_flan_mix(name="flan_test", variant_weights={"zs": 3, "fs": 1})
    shares = mixing.mixture_proportions(name)
    assert sum(v for k, v in shares.items() if k.endswith("_zs")) == pytest.approx(0.75)
    with pytest.raises(T5mtlError, match="weight of 'flan_test_cot' is 0"):
        mixtures.register_flan_mix(name="flan_test", variant_weights={"zs": 1, "cot": 0})
    with pytest.raises(T5mtlError, match="unknown variant 'zero'"):
        mixtures.register_flan_mix(name="flan_test", variant_weights={"zero": 1})


def test_instruction_mixture_reads_its_variants():
    name = mixtures.register_instruction_mixture("mixtest_instruct", ["synth_add", "synth_parity"],
                                                 {"zs": 1, "fs": 1, "opt": 1, "cot": 2})
    assert sorted(mixing.mixture_proportions(name)) == [
        "synth_add_cot", "synth_add_fs", "synth_add_zs", "synth_parity_cot", "synth_parity_fs",
        "synth_parity_opt", "synth_parity_zs"]
    ds = seqio.get_mixture_or_task(name).get_dataset(
        {"inputs": 192, "targets": 64}, split="train", shuffle=False, seed=0,
        passthrough_features=["_task_name", "_variant", "_template_idx", "_num_exemplars"])
    exs = list(ds.take(400).as_numpy_iterator())
    variants = [ex["_variant"].decode() for ex in exs]
    assert abs(variants.count("cot") / 400 - 0.4) < 0.1
    for ex in exs:
        assert (ex["_num_exemplars"] > 0) == (ex["_variant"] == b"fs")
        base = task_info.get_task_info(ex["_task_name"].decode()).base_task
        assert base in ("synth_add", "synth_parity") and len(ex["inputs"]) <= 192


# ---------------------------------------------------------------- generalization splits

DEFAULT_HELDOUT_TASKS = ("synth_add", "synth_string_length", "synth_first_word",
                         "synth_sort_numbers", "synth_reverse_letters")


def test_default_synthetic_split():
    s = mixtures.generalization_splits()
    assert s == mixtures.generalization_splits()  # deterministic
    assert s.heldout_categories == ("classification", "sequence")
    assert s.seen_categories == ("arithmetic", "counting", "extraction", "ordering",
                                 "string_edit")
    assert s.heldout_tasks == DEFAULT_HELDOUT_TASKS
    assert s.heldout_category_tasks == tuple(sorted(
        synthetic.task_names("classification") + synthetic.task_names("sequence")))
    assert s.seen_tasks == s.train_tasks and len(s.train_tasks) == 33 - 9 - 5
    assert set(s.train_tasks) | set(s.heldout_tasks) | set(s.heldout_category_tasks) == set(SYNTH)
    assert not set(s.train_tasks) & set(s.heldout_tasks)
    category = {t.task_name: t.category for t in synthetic.TASKS}
    assert {category[n] for n in s.train_tasks} == set(s.seen_categories)
    assert {category[n] for n in s.heldout_tasks} == set(s.seen_categories)
    assert not {category[n] for n in s.train_tasks} & set(s.heldout_categories)
    assert list(s.levels()) == ["heldout_categories", "heldout_tasks", "heldout_instances"]


def test_other_splits_and_errors():
    drawn = mixtures.generalization_splits(held_out_categories=2, seed=3)
    assert drawn == mixtures.generalization_splits(held_out_categories=2, seed=3)
    assert len(drawn.heldout_categories) == 2
    other_seed = mixtures.generalization_splits(seed=1)
    assert other_seed.heldout_categories == ("classification", "sequence")
    # A category's held-out task depends only on (seed, category).
    two = mixtures.generalization_splits(held_out_tasks_per_category=2)
    assert len(two.heldout_tasks) == 10
    glue = mixtures.generalization_splits(["glue_sst2", "glue_cola", "superglue_cb",
                                           "superglue_rte"], held_out_categories=["sentiment"],
                                          held_out_tasks_per_category=0)
    assert glue.heldout_category_tasks == ("glue_sst2",) and glue.heldout_tasks == ()
    with pytest.raises(T5mtlError, match=r"held-out categories \['cooking'\] are not in the "
                                         r"suite"):
        mixtures.generalization_splits(held_out_categories=["cooking"])
    with pytest.raises(T5mtlError, match="every category is held out"):
        mixtures.generalization_splits(held_out_categories=list(synthetic.CATEGORIES))
    with pytest.raises(T5mtlError, match="category 'counting' has 4 tasks; holding out 4"):
        mixtures.generalization_splits(held_out_tasks_per_category=4)
    with pytest.raises(T5mtlError, match="unknown or empty suite 'synthtic'"):
        mixtures.generalization_splits("synthtic")


def test_registered_generalization_mixtures():
    s = mixtures.generalization_splits()
    train = mixing.mixture_proportions("synth_seen_train")
    assert {task_info.get_task_info(n).base_task for n in train} == set(s.train_tasks)
    assert {task_info.get_task_info(n).variant for n in train} == {"zs", "fs", "cot", "inv"}
    for level, name in mixtures.SYNTH_EVAL_MIXTURES.items():
        members = sorted(t.name for t in seqio.get_mixture_or_task(name).tasks)
        assert members == sorted(templates.variant_name(b, "zs") for b in s.levels()[level])
    assert mixtures.synthetic_generalization("heldout_tasks") == "synth_heldout_tasks"


# ---------------------------------------------------------------- gin files

@pytest.mark.parametrize("gin_file,expected,check", [
    ("exmix.gin", "exmix", lambda p: p["superglue_cb"] == pytest.approx(_expected_exmix(1000)
                                                                         ["superglue_cb"])),
    ("ext5_pretrain.gin", "ext5_pretrain",
     lambda p: p["raw_text_en_span_corruption"] == pytest.approx(2 / 3)),
    ("flan_mix.gin", "flan_mix", lambda p: len(p) == len(mixing.mixture_proportions("flan_mix"))),
    ("synth_generalization.gin", "synth_seen_train",
     lambda p: all(n.startswith("synth_") for n in p)),
])
def test_gin_files_name_and_build_the_mixture(gin_file, expected, check):
    from t5mtl.data.data_config import DataConfig

    gin.clear_config()
    try:
        gin.parse_config_files_and_bindings([os.path.join(ROOT, "gin", "mixtures", gin_file)],
                                            ["register_exmix.cap = 1000"]
                                            if gin_file == "exmix.gin" else [])
        config = DataConfig()
    finally:
        gin.clear_config()
    assert config.mixture_or_task_name == expected
    assert check(mixing.mixture_proportions(expected))
    mixtures.register(overwrite=True)  # back to the defaults
    assert mixing.mixture_proportions("exmix") == pytest.approx(_expected_exmix(3000))
