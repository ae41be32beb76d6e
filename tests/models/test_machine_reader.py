"""PMR's machine reader behind the protocol (t5mtl.models.machine_reader) and
its seqio path (t5mtl.data.mrc_features): the batches a registered MRC task
yields carry exactly the labels data.pmr_data.mrc_arrays builds, the model's
loss is span_loss over them, and training makes the gold spans the best."""
import jax
import numpy as np
import optax
import pytest
import seqio

from t5mtl.data.batches import host_batches
from t5mtl.data.mrc_features import register_mrc_task
from t5mtl.data.pmr_data import MrcExample, MrcLayout, encode_mrc, mrc_arrays
from t5mtl.errors import T5mtlError
from t5mtl.models import get_config
from t5mtl.models.machine_reader import MachineReader, span_labels
from t5mtl.models.span_extractor import span_loss, valid_span_mask
from tests.models.test_masked_lm import random_params

CONFIG = get_config("t5_tiny")
VOCAB = seqio.ByteVocabulary()
LAYOUT = MrcLayout(VOCAB, cls_id=3, sep_id=4, max_length=48, max_query_length=12)
LENGTH = 48


def _example(i, query, context, answer=None, relevant=None):
    spans = ()
    if answer is not None:
        start = context.index(answer)
        spans = ((start, start + len(answer)),)
    return MrcExample(query, context, spans, relevant=relevant, id=f"ex{i}")


EXAMPLES = [_example(0, "who?", "Ada wrote it.", "Ada"),
            _example(1, "where?", "It was in Rome then.", "Rome", relevant=True),
            _example(2, "what?", "Nothing here at all.", relevant=False),
            _example(3, "when?", "In May, at noon.", "May")]
WINDOWS = [w for e in EXAMPLES for w in encode_mrc(e, LAYOUT)]


@pytest.fixture
def mrc_task():
    task = register_mrc_task("test_mrc_tiny", {"train": WINDOWS, "validation": WINDOWS[:2]},
                             VOCAB)
    yield task.name
    seqio.TaskRegistry.remove(task.name)


def _batch(name):
    batches = host_batches(name, {"inputs": LENGTH, "targets": 1}, "train", len(WINDOWS),
                           shuffle=False, pack=False, num_epochs=1,
                           feature_converter=MachineReader(CONFIG).feature_converter(False))
    return next(iter(batches))


def test_task_batches_carry_the_labels_and_masks_mrc_arrays_builds(mrc_task):
    batch = _batch(mrc_task)
    ref = mrc_arrays(WINDOWS, LENGTH)
    np.testing.assert_array_equal(batch["encoder_input_tokens"], ref["input_ids"])
    np.testing.assert_array_equal(batch["encoder_token_types"], ref["token_type_ids"])
    np.testing.assert_array_equal(batch["context_mask"] > 0, ref["context_mask"])
    np.testing.assert_array_equal(batch["cls_span"] > 0, ref["cls_span"])
    np.testing.assert_array_equal(np.asarray(span_labels(batch, LENGTH)),
                                  ref["span_labels"] > 0)
    assert ref["span_labels"].sum() == 4          # Ada, Rome + its [CLS], May


def test_loss_is_span_loss_and_training_makes_the_gold_spans_best(mrc_task):
    batch = {k: np.asarray(v) for k, v in _batch(mrc_task).items()}
    ref = mrc_arrays(WINDOWS, LENGTH)
    model = MachineReader(CONFIG, max_span_length=None)
    params = random_params(model)

    @jax.jit
    def outputs(params):
        """Everything checked, in one program: logits, loss and metrics,
        best spans, [CLS] logits."""
        loss, metrics = model.loss_fn(params, batch, None)
        return (model.span_logits(params, batch), loss, metrics,
                model.best_spans(params, batch), model.cls_logits(params, batch))

    logits, loss, metrics, _, _ = outputs(params)
    valid = valid_span_mask(ref["context_mask"], None, ref["cls_span"])
    np.testing.assert_allclose(float(loss), float(span_loss(logits, ref["span_labels"], valid)),
                               rtol=1e-6)
    assert float(metrics["num_sequences"]) == len(WINDOWS)

    tx = optax.adam(1e-2)
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        grads = jax.grad(lambda p: model.loss_fn(p, batch, None)[0])(params)
        updates, state = tx.update(grads, state)
        return optax.apply_updates(params, updates), state
    for _ in range(60):
        params, state = step(params, state)
    _, _, metrics, (starts, ends, _), cls = outputs(params)
    texts = [w.span_text(int(s), int(e)) for w, s, e in zip(WINDOWS, starts[:, 0], ends[:, 0])]
    assert [texts[i] for i in (0, 1, 3)] == ["Ada", "Rome", "May"]
    assert cls[1] > 0 > cls[2]                    # relevant vs not
    assert float(metrics["accuracy"]) == 1.0


def test_spec_round_trip_and_a_source_mlm_head_is_dropped():
    model = MachineReader(CONFIG, max_span_length=8, intermediate_dim=16)
    again = MachineReader.from_spec(model.spec())
    assert again.spec() == model.spec() and again.architecture() == model.architecture()
    params = model.abstract_params()
    adapted = model.adapt_params({**params, "mlm": {"bias": np.zeros(3)}, "decoder": {}})
    assert set(adapted) == set(params)
    with pytest.raises(T5mtlError, match="split 'train' has no windows"):
        register_mrc_task("test_mrc_empty", {"train": []}, VOCAB)
