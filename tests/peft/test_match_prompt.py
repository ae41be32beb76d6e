"""Match-Prompt's TaskPrompts: each row gets its own task's prompt (against
PrependVectors as the reference), scan and KV-cache parity, the description
init, stage 1 and 2 train steps, parameter counts, and the error lines."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import seqio

from t5mtl.errors import T5mtlError
from t5mtl.models import Transformer, get_config, param_names
from t5mtl.models.base import WarmStart
from t5mtl.models.encoder_decoder import DecodeConfig, EncoderDecoderModel
from t5mtl.models.encoder_inputs import PrependVectors
from t5mtl.models.layout import stack_layers
from t5mtl.peft import match_prompt
from t5mtl.peft.match_prompt import DESCRIPTIONS, TaskPrompts
from t5mtl.train.optimizers import create_optimizer
from t5mtl.train.train_step import TrainState, make_train_step

TASKS = ("glue_qnli", "superglue_boolq", "superglue_cb")
P = 3
ROWS = np.array([2, 0, 1, 2])         # each row's task


def _model(scan=False, tasks=TASKS, length=P):
    return EncoderDecoderModel(get_config("t5_tiny", scan_layers=scan),
                               encoder_input=TaskPrompts(tasks, length))


@pytest.fixture(scope="module")
def tiny():
    model = _model()
    params = nn.unbox(jax.jit(model.init_boxed)(jax.random.PRNGKey(0)))
    rng = np.random.RandomState(0)
    enc = rng.randint(3, 250, (4, 10)).astype(np.int32)
    enc[1, 6:] = 0
    enc[3, 8:] = 0
    ids = np.where(enc != 0, ROWS[:, None], -1).astype(np.int32)
    return model, params, enc, ids


def _encoder_inputs(module, params, enc, ids):
    return jax.jit(lambda p, e, t: module.apply({"params": p}, e, task_ids=t,
                                                method=Transformer.encoder_inputs))(params, enc,
                                                                                   ids)


def test_each_row_gets_its_tasks_prompt_as_prepend_vectors_would(tiny):
    model, params, enc, ids = tiny
    out = _encoder_inputs(model.module, params, enc, ids)
    embedding = np.asarray(params["token_embedder"]["embedding"])
    for r, t in enumerate(ROWS):
        np.testing.assert_array_equal(out.embedded[r, :P], params["encoder_input"][TASKS[t]])
        np.testing.assert_array_equal(out.embedded[r, P:], embedding[enc[r]])
    np.testing.assert_array_equal(out.segment_ids,
                                  np.concatenate([np.ones((4, P)), enc != 0], 1))
    np.testing.assert_array_equal(out.task_ids,
                                  np.concatenate([np.repeat(ROWS[:, None], P, 1), ids], 1))
    # The reference: PrependVectors holding task t's prompt, on t's rows.
    plain = Transformer(model.config, encoder_input=PrependVectors(P))
    for t, task in enumerate(TASKS):
        rows = np.flatnonzero(ROWS == t)
        ref = _encoder_inputs(plain, {**params, "encoder_input": {
            "vectors": params["encoder_input"][task]}}, enc[rows], ids[rows])
        for field in ("embedded", "segment_ids", "task_ids"):
            np.testing.assert_array_equal(getattr(out, field)[rows], getattr(ref, field))
    # Evaluation's [b, 1] row ids (task_features) give the same inputs.
    rowwise = _encoder_inputs(model.module, params, enc, ROWS[:, None].astype(np.int32))
    for field in ("embedded", "segment_ids", "task_ids"):
        np.testing.assert_array_equal(getattr(rowwise, field), getattr(out, field))


def test_logits_same_scanned_and_kv_cache_decoding_matches_recomputation(tiny):
    model, params, enc, ids = tiny
    dec = np.random.RandomState(1).randint(3, 250, (4, 6)).astype(np.int32)
    batch = {"encoder_input_tokens": enc, "decoder_input_tokens": dec, "encoder_task_ids": ids}
    full = jax.jit(model.logits)
    logits = np.asarray(full(params, batch))
    scanned = _model(scan=True)
    np.testing.assert_allclose(
        np.asarray(jax.jit(scanned.logits)(stack_layers(params, scanned.config), batch)),
        logits, atol=1e-5)
    # Another task's prompt changes a row's output: the ids are read.
    other = {**batch, "encoder_task_ids": np.where(enc != 0, 1, -1).astype(np.int32)}
    assert np.abs(np.asarray(full(params, other))[0] - logits[0]).max() > 1e-3
    # Greedy decoding with the KV cache = argmax over full recomputations.
    n = 6
    got = np.asarray(model.predict_batch(params, {"encoder_input_tokens": enc,
                                                  "encoder_task_ids": ids},
                                         DecodeConfig(max_decode_length=n)))
    want = np.zeros((4, n), np.int32)
    done = np.zeros(4, bool)
    for i in range(n):
        dec_in = np.concatenate([np.zeros((4, 1), np.int32), want[:, :n - 1]], 1)
        step = np.asarray(full(params, {"encoder_input_tokens": enc, "encoder_task_ids": ids,
                                        "decoder_input_tokens": dec_in}))[:, i].argmax(-1)
        want[:, i] = np.where(done, 0, step)
        done |= want[:, i] == 1
    np.testing.assert_array_equal(got, want)


def test_description_init_is_the_descriptions_token_embeddings(tiny):
    model, params, _, _ = tiny
    vocab = seqio.ByteVocabulary()
    # P=3 cuts the table's descriptions; "ab" (2 tokens) is repeated to 3.
    model = model.replace(encoder_input=TaskPrompts(TASKS, P, descriptions={"glue_qnli": "ab"}))
    fresh = [f"encoder_input/{t}" for t in TASKS]
    out = model.warm_start(params, fresh, WarmStart(vocab, (), jax.random.PRNGKey(0)))
    embedding = np.asarray(params["token_embedder"]["embedding"])
    byte_ids = lambda text: [b + 3 for b in text.encode()]        # ByteVocabulary: byte + 3
    a, b = byte_ids("ab")
    np.testing.assert_array_equal(out["encoder_input"]["glue_qnli"], embedding[[a, b, a]])
    for task in TASKS[1:]:
        np.testing.assert_array_equal(out["encoder_input"][task],
                                      embedding[byte_ids(DESCRIPTIONS[task])[:P]])
    # An unseen task: its prompt from its description, the rest unchanged.
    seen, seen_params = match_prompt.with_task(model, out, "superglue_rte", vocab)
    assert seen.encoder_input.tasks == TASKS + ("superglue_rte",)
    np.testing.assert_array_equal(seen_params["encoder_input"]["superglue_rte"],
                                  embedding[byte_ids(DESCRIPTIONS["superglue_rte"])[:P]])
    np.testing.assert_array_equal(seen.task_features("superglue_rte", 2)["encoder_task_ids"],
                                  [[3], [3]])


def _step_and_batch(model, params, trainable):
    tx = create_optimizer("adafactor", learning_rate=0.1)
    step = jax.jit(make_train_step(model.loss_fn, tx, trainable_names=trainable))
    state = TrainState.create(params, tx, jax.random.PRNGKey(0), trainable_names=trainable)
    rng = np.random.RandomState(2)
    enc = rng.randint(3, 250, (4, 10)).astype(np.int32)
    dec = rng.randint(3, 250, (4, 5)).astype(np.int32)
    batch = {"encoder_input_tokens": enc, "decoder_target_tokens": dec,
             "decoder_input_tokens": np.concatenate([np.zeros((4, 1), np.int32), dec[:, :-1]], 1),
             "decoder_loss_weights": np.ones_like(dec)}
    return step, state, batch


def test_stage_one_a_task_a_batch_moves_only_task_as_prompt(tiny):
    model, params, _, _ = tiny
    names = list(param_names.flatten(params))
    trainable = param_names.select(names, ["encoder_input/.*"])
    assert sorted(trainable) == sorted(f"encoder_input/{t}" for t in TASKS)
    step, state, batch = _step_and_batch(model, params, trainable)
    for _ in range(2):      # two batches of task 1 (superglue_boolq) alone
        state, _ = step(state, {**batch, "encoder_task_ids": np.ones((4, 10), np.int32)})
    before, after = param_names.flatten(params), param_names.flatten(state.params)
    for name in names:
        if name == "encoder_input/superglue_boolq":
            assert np.abs(after[name] - before[name]).max() > 1e-3
        else:
            np.testing.assert_array_equal(after[name], before[name], err_msg=name)


def test_stage_two_trains_the_model_with_the_prompts_frozen(tiny):
    model, params, _, _ = tiny
    names = list(param_names.flatten(params))
    trainable = param_names.select(names, None, ["encoder_input/.*"])
    step, state, batch = _step_and_batch(model, params, trainable)
    ids = np.repeat(np.array([[0], [1], [2], [0]], np.int32), 10, 1)
    for _ in range(2):
        state, _ = step(state, {**batch, "encoder_task_ids": ids})
    before, after = param_names.flatten(params), param_names.flatten(state.params)
    for task in TASKS:
        np.testing.assert_array_equal(after[f"encoder_input/{task}"],
                                      before[f"encoder_input/{task}"])
    moved = [n for n in trainable if np.abs(after[n] - before[n]).max() > 0]
    assert "token_embedder/embedding" in moved and len(moved) > len(trainable) // 2


def test_trainable_counts_formula_against_the_tree_and_docs():
    cfg = get_config("t5_tiny")
    for tasks, length in ((TASKS, P), (TASKS[:2], 7)):
        flat = param_names.flatten(_model(tasks=tasks, length=length).abstract_params())
        sizes = {k: int(np.prod(v.shape)) for k, v in flat.items()}
        prompts = sum(v for k, v in sizes.items() if k.startswith("encoder_input/"))
        assert prompts == len(tasks) * length * cfg.d_model \
            == match_prompt.trainable_parameters(cfg, len(tasks), length, "specialize")
        frozen = param_names.select(list(sizes), None, ["encoder_input/.*"])
        assert sum(sizes[k] for k in frozen) == match_prompt.trainable_parameters(
            cfg, len(tasks), length, "generalize")
        assert sum(sizes.values()) == match_prompt.trainable_parameters(
            cfg, len(tasks), length, "generalize", train_prompts=True)
    # docs/peft.md's Match-Prompt table: T=4 tasks, P=20.
    small, base = get_config("t5_1_1_small"), get_config("t5_1_1_base")
    count = match_prompt.trainable_parameters
    assert [count(small, 4, 20, "specialize"), count(small, 4, 20, "generalize"),
            count(small, 4, 20, "generalize", True)] == [40_960, 76_961_152, 77_002_112]
    assert [count(base, 4, 20, "specialize"), count(base, 4, 20, "generalize"),
            count(base, 4, 20, "generalize", True)] == [61_440, 247_577_856, 247_639_296]


def test_bad_input_is_one_clear_line(tiny):
    model, params, enc, ids = tiny
    vocab = seqio.ByteVocabulary()
    lonely = TaskPrompts(("no_such_task",), P)
    with pytest.raises(T5mtlError, match="task 'no_such_task' has no description"):
        lonely.warm_start({"no_such_task": jnp.zeros((P, 64))},
                          WarmStart(vocab, (), embedding=params["token_embedder"]["embedding"]))
    with pytest.raises(T5mtlError, match="no encoder_task_ids"):
        model.logits(params, {"encoder_input_tokens": enc, "decoder_input_tokens": enc})
    with pytest.raises(T5mtlError, match="no prompt for task 'superglue_rte'"):
        model.task_features("superglue_rte", 2)
    with pytest.raises(T5mtlError, match=r"data's tasks are \['superglue_cb', 'glue_qnli'\]"):
        model.check_tasks(["superglue_cb", "glue_qnli"])
    model.check_tasks(list(TASKS))
    with pytest.raises(T5mtlError, match="pack=False"):
        model.module.apply({"params": params}, enc, segment_ids=(enc != 0).astype(np.int32),
                           task_ids=ids, method=Transformer.encoder_inputs)
    with pytest.raises(T5mtlError, match="name each task of the mixture once"):
        TaskPrompts(("a", "a"))


@pytest.mark.slow
def test_bench_quick_mode_end_to_end(tmp_path, peft_base, shared_data_dir):
    import json

    import t5mtl
    from bench import match_prompt as bench
    from t5mtl.data.data_dir import set_data_dir
    out = str(tmp_path / "bench")
    try:
        text = bench.main(["--quick", "--base", str(peft_base), "--out", out, "--tasks",
                           "superglue_cb", "--unseen", "superglue_rte", "--data_dir",
                           shared_data_dir])
        targets = {task: [ex["targets_pretokenized"].decode() for ex in seqio.get_mixture_or_task(
            task).get_dataset({"inputs": 128, "targets": 16}, split="validation",
                              shuffle=False).take(8).as_numpy_iterator()]
                   for task in ("superglue_cb", "superglue_rte")}
    finally:
        set_data_dir(None)
        from t5mtl.data import matching_tasks
        matching_tasks.unregister()         # the bench registered them: leave none behind
    lines = text.splitlines()
    assert lines[0] == "| method | superglue_cb | in-domain mean | superglue_rte (unseen) |"
    assert [line.split(" | ")[0] for line in lines[2:]] == [f"| {label}" for _, label in bench.ROWS]
    assert lines[-1].endswith(" | - |")                 # task-specific: no unseen column
    scores = json.load(open(f"{out}/scores.json"))
    assert set(scores["match_prompt"]) == set(scores["multitask"]) == {"superglue_cb",
                                                                       "superglue_rte"}
    # Chance is the majority share of the 8 scored validation rows.
    for task, labels in targets.items():
        share = 100.0 * max(labels.count(t) for t in set(labels)) / len(labels)
        assert scores["chance"][task] == pytest.approx(share)
    # Stage 2 kept stage 1's prompts and trained the model; stage 1 kept the base.
    s1, s2 = t5mtl.load(f"{out}/stage1"), t5mtl.load(f"{out}/stage2")
    np.testing.assert_array_equal(s1.params["encoder_input"]["superglue_cb"],
                                  s2.params["encoder_input"]["superglue_cb"])
    base = t5mtl.load(str(peft_base)).params["token_embedder"]["embedding"]
    np.testing.assert_array_equal(s1.params["token_embedder"]["embedding"], base)
    assert np.abs(s2.params["token_embedder"]["embedding"] - base).max() > 0


def test_matching_copies_register_on_demand_not_at_import():
    """match_qnli / match_boolq train on the originals' validation rows: an
    import must not register them (they joined ExMix, 'every supervised
    task', in any process that had imported the module); the gin hook does."""
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    code = ("import seqio\n"
            "from t5mtl.data import matching_tasks, mixtures\n"
            "copies = set(matching_tasks.COPIES)\n"
            "assert not copies & set(seqio.TaskRegistry.names())\n"
            "assert matching_tasks.register_matching_tasks(['match_qnli']) == ['match_qnli']\n"
            "assert copies <= set(seqio.TaskRegistry.names())\n"
            "print(sorted(copies & set(mixtures.supervised_tasks())))\n")
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
    done = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    # Registered, they are variants of their originals, not supervised base tasks.
    assert done.stdout.strip() == "[]"
