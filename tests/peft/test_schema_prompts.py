"""Schema prompts (Zhong et al., 2022): the rendered token layout against a
hand-computed one, the module's exact replacement of placeholder embeddings,
key prompts shared across tasks (one parameter, gradients from each task),
zero-shot composition for a held-out task, scan on/off parity, parameter
counts (formula, real tree, docs figures) and one-line errors."""
import pathlib
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import seqio
import tensorflow as tf

import t5mtl.data.registry  # noqa: F401  (the base tasks)
from t5mtl.data import files
from t5mtl.data import schema_prompts as sp
from t5mtl.data import task_info as task_info_lib
from t5mtl.data.schema_layout import DEFAULT_KEYS, DEFAULT_TYPES, SchemaLayout
from t5mtl.data.vocab import get_vocabulary
from t5mtl.errors import T5mtlError
from t5mtl.models import Transformer, get_config, layout, param_names
from t5mtl.models.encoder_decoder import EncoderDecoderModel
from t5mtl.peft import SchemaPrompts
from t5mtl.peft.schema_prompts import schema_prompt_params

VOCAB = get_vocabulary()            # bytes: 3 special ids, 256 bytes, 100 extra ids
SMALL = dict(keys=("premise", "hypothesis", "sentence"), types=("nli", "sentiment"), length=2,
             vocab_size=VOCAB.vocab_size)


@pytest.fixture(scope="module", autouse=True)
def schema_tasks():
    """The schema tasks registered for this module only (task listings elsewhere
    do not know them)."""
    assert sp.register_schema_mtl() == sp.MIXTURE
    yield
    sp.unregister()


def _render(example, fields, target, category, lay):
    ds = tf.data.Dataset.from_tensors({k: tf.constant(v) for k, v in example.items()})
    out = sp.render(ds, files.output_features(VOCAB), fields, target, category, lay, "t")
    return next(iter(out.as_numpy_iterator()))


def test_render_gives_the_hand_computed_layout():
    lay = SchemaLayout(**SMALL)
    ex = _render({"premise": "ab", "hypothesis": "c", "label": "yes"},
                 ("premise", "hypothesis"), "label", "nli", lay)
    # 359 ids; rows count down from 358: type nli rows 0-1, sentiment 2-3,
    # key premise rows 4-5, hypothesis 6-7; byte b is id b + 3.
    assert VOCAB.vocab_size == 359
    assert ex["inputs"].tolist() == [358, 357, 354, 353, 97 + 3, 98 + 3, 352, 351, 99 + 3]
    assert ex["targets"].tolist() == [ord("y") + 3, ord("e") + 3, ord("s") + 3]
    assert ex["inputs_pretokenized"] == b"<nli> <premise> ab <hypothesis> c"
    ex = _render({"sentence": "hi", "label": "ok"}, ("sentence",), "label", "sentiment", lay)
    assert ex["inputs"].tolist() == [356, 355, 350, 349, ord("h") + 3, ord("i") + 3]


def test_registered_task_renders_its_fields_between_placeholder_runs():
    task = seqio.get_mixture_or_task("schema_synth_add")
    ds = task.get_dataset({"inputs": 128, "targets": 16}, split="validation", shuffle=False,
                          use_cached=False)
    ex = next(iter(ds.as_numpy_iterator()))
    lay = sp.layout_for(VOCAB)
    texts = [VOCAB.encode(ex[f].decode()) for f in ("instruction", "query")]
    want = sp.render_ids(texts, ("instruction", "query"), "arithmetic", lay) + [1]   # EOS
    assert ex["inputs"].tolist() == want
    assert ex["targets"].tolist() == VOCAB.encode(ex["answer"].decode()) + [1]


def _tokens(lay):
    """Three rows, padded: an nli example (premise, hypothesis), a sentiment
    one (sentence) and an nli one with a sentence (another task with the
    same field); text ids below the extra ids."""
    rows = [sp.render_ids([[10, 11, 12], [20, 21]], ("premise", "hypothesis"), "nli", lay),
            sp.render_ids([[30, 31, 32, 33]], ("sentence",), "sentiment", lay),
            sp.render_ids([[50, 51]], ("sentence",), "nli", lay)]
    length = max(map(len, rows)) + 2
    return np.asarray([r + [1] + [0] * (length - len(r) - 1) for r in rows], np.int32)


@pytest.fixture(scope="module")
def tiny():
    """t5_tiny with SchemaPrompts over SMALL, its params and two rendered rows."""
    module = SchemaPrompts(**SMALL)
    model = EncoderDecoderModel(get_config("t5_tiny"), encoder_input=module)
    params = nn.unbox(jax.jit(model.init_boxed)(jax.random.PRNGKey(0)))
    return model, params, _tokens(module.layout())


def test_module_puts_the_learned_rows_at_placeholders_and_token_embeddings_elsewhere(tiny):
    model, params, tokens = tiny
    out = model.module.apply({"params": params}, tokens, method=Transformer.encoder_inputs)
    table = np.concatenate([np.asarray(params["encoder_input"]["types"]).reshape(-1, 64),
                            np.asarray(params["encoder_input"]["keys"]).reshape(-1, 64)])
    embedding = np.asarray(params["token_embedder"]["embedding"])
    want = embedding[tokens]
    rows = 358 - tokens
    placeholder = (rows >= 0) & (rows < table.shape[0])
    want[placeholder] = table[rows[placeholder]]
    assert placeholder.sum() == 2 * (3 + 2 + 2)          # runs per row, P=2
    np.testing.assert_array_equal(np.asarray(out.embedded), want)
    np.testing.assert_array_equal(np.asarray(out.segment_ids), (tokens != 0).astype(np.int32))
    assert out.task_ids is None and not out.packed


def _batch(tokens):
    dec = np.full((len(tokens), 3), 40, np.int32)
    return {"encoder_input_tokens": tokens, "decoder_input_tokens": dec,
            "decoder_target_tokens": dec, "decoder_loss_weights": np.ones_like(dec)}


def test_a_shared_key_is_one_parameter_trained_by_every_task_with_that_field(tiny):
    model, params, tokens = tiny
    # Registered tasks sharing a field (one key run, one table row).
    for a, b, field in (("glue_sst2", "glue_cola", "sentence"),
                        ("superglue_cb", "superglue_rte", "premise")):
        assert field in sp.fields_of(task_info_lib.get_task_info(a))[0]
        assert field in sp.fields_of(task_info_lib.get_task_info(b))[0]

    grad = jax.jit(jax.grad(lambda p, batch: model.loss_fn(p, batch, None)[0]))

    def grads(row):     # one task's example alone
        return grad(params, {k: v[row:row + 1] for k, v in _batch(tokens).items()})[
            "encoder_input"]

    nli, senti, other = grads(0), grads(1), grads(2)
    norm = lambda g, i: float(jnp.abs(g[i]).sum())           # noqa: E731
    # keys: premise 0, hypothesis 1, sentence 2; types: nli 0, sentiment 1.
    assert norm(nli["keys"], 0) > 0 and norm(nli["keys"], 1) > 0 and norm(nli["keys"], 2) == 0
    assert norm(nli["types"], 0) > 0 and norm(nli["types"], 1) == 0
    # Both tasks with a "sentence" train the one row keys[2], nothing else's key.
    for g in (senti, other):
        assert norm(g["keys"], 2) > 0 and norm(g["keys"], 0) == norm(g["keys"], 1) == 0
    assert norm(senti["types"], 1) > 0 and norm(senti["types"], 0) == 0
    assert norm(other["types"], 0) > 0 and norm(other["types"], 1) == 0


def test_held_out_task_composes_from_known_prompts_without_new_parameters():
    assert set(sp.HELDOUT_TASKS).isdisjoint(
        {t[len(sp.PREFIX):] for t in sp.train_tasks()})
    mixture = seqio.get_mixture_or_task(sp.MIXTURE)
    assert sorted(t.name for t in mixture.tasks) == sorted(sp.train_tasks())
    seen_keys, seen_types = set(), set()
    for name in sp.train_tasks():
        info = task_info_lib.get_task_info(name)
        seen_keys |= set(sp.fields_of(info)[0])
        seen_types.add(info.category)
    # The layout covers every registered schema task, and each held-out task's
    # fields and category are trained by the mixture.
    for base in sp.base_tasks():
        info = task_info_lib.get_task_info(base)
        assert set(sp.fields_of(info)[0]) <= set(DEFAULT_KEYS) and info.category in DEFAULT_TYPES
    for base in sp.HELDOUT_TASKS:
        info = task_info_lib.get_task_info(base)
        assert set(sp.fields_of(info)[0]) <= seen_keys and info.category in seen_types
    # The model's parameters depend on the layout alone, not on the tasks.
    model = EncoderDecoderModel(get_config("t5_tiny"),
                                encoder_input=SchemaPrompts(vocab_size=VOCAB.vocab_size))
    shapes = {k: v.shape for k, v in param_names.flatten(model.abstract_params()).items()
              if k.startswith("encoder_input/")}
    assert shapes == {"encoder_input/types": (12, 4, 64), "encoder_input/keys": (9, 4, 64)}
    # model.json rebuilds the same module (the layout is recorded).
    rebuilt = EncoderDecoderModel.from_spec(model.spec())
    assert rebuilt.encoder_input.layout() == model.encoder_input.layout()


def test_outputs_identical_with_scan_layers_on_and_off(tiny):
    model, params, tokens = tiny
    scanned = EncoderDecoderModel(get_config("t5_tiny", scan_layers=True),
                                  encoder_input=SchemaPrompts(**SMALL))
    stacked = layout.to_layout(params, scanned.config)
    batch = _batch(tokens)
    a = jax.jit(model.logits)(params, batch)
    b = jax.jit(scanned.logits)(stacked, batch)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)


def _trainable(model):
    sizes = {k: int(np.prod(v.shape))
             for k, v in param_names.flatten(model.abstract_params()).items()}
    return sum(sizes[k] for k in param_names.select(list(sizes), ["encoder_input/.*"]))


def test_trainable_parameter_count_formula_tree_and_docs():
    cfg = get_config("t5_tiny")
    model = EncoderDecoderModel(cfg, encoder_input=SchemaPrompts(**SMALL))
    assert _trainable(model) == (2 + 3) * 2 * 64 == schema_prompt_params(cfg, 3, 2, 2)
    # The docs' figures: 12 types + 9 keys, P = 4.
    small = schema_prompt_params(get_config("t5_1_1_small"))
    base = schema_prompt_params(get_config("t5_1_1_base"))
    assert (small, base) == ((12 + 9) * 4 * 512, (12 + 9) * 4 * 768) == (43_008, 64_512)
    docs = (pathlib.Path(__file__).parents[2] / "docs" / "peft.md").read_text()
    section = docs[docs.index("## Schema prompts"):]
    assert re.search(r"t5_1_1_small \| [\d,]+ \| 43,008 ", section)
    assert re.search(r"t5_1_1_base \| [\d,]+ \| 64,512 ", section)


def _register_base(name, fields, category="nli"):
    info = task_info_lib.TaskInfo(name=name, category=category, schema="text_to_text",
                                  fields=fields)
    source = files.PythonSource(["validation"], lambda split: iter(()),
                                dtypes={f: "string" for f in fields})
    files.register_task(name, source, [], info, overwrite=True)


def test_errors_name_the_bad_value():
    try:
        _register_base("tmp_claims", ("claim", "evidence", "label"))
        with pytest.raises(T5mtlError, match="field 'claim' has no key prompt"):
            sp.register_schema_task("tmp_claims")
        _register_base("tmp_nofields", ())
        with pytest.raises(T5mtlError, match="task 'tmp_nofields' has no TaskInfo fields"):
            sp.register_schema_task("tmp_nofields")
        _register_base("tmp_newtype", ("premise", "label"), category="reasoning")
        with pytest.raises(T5mtlError, match="category 'reasoning' has no type prompt"):
            sp.register_schema_task("tmp_newtype")
    finally:
        for name in ("tmp_claims", "tmp_nofields", "tmp_newtype"):
            seqio.TaskRegistry.remove(name)
            task_info_lib.remove_task_info(name)
    with pytest.raises(T5mtlError, match="unknown task 'no_such_task'"):
        sp.register_schema_task("no_such_task")
    with pytest.raises(T5mtlError, match="SchemaPrompts.vocab_size"):
        SchemaPrompts()
    with pytest.raises(T5mtlError, match="84 placeholder ids .* 10 extra ids"):
        sp.layout_for(get_vocabulary(extra_ids=10))
