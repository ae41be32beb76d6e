"""Trainable subsets: the step differentiates only the selected parameters
(no weight gradients for the rest), the optimizer keeps state for them
alone, frozen parameters stay bit-identical, and a checkpoint can hold only
the trained subset next to a reference to its base model."""
import json
import shutil

import jax
import numpy as np
import pytest

import t5mtl
import t5mtl.data.registry  # noqa: F401  (registers the synthetic suite)
from t5mtl.data.batches import scoring_batch
from t5mtl.data.data_config import DataConfig
from t5mtl.errors import T5mtlError
from t5mtl.models import get_config, param_names
from t5mtl.models.encoder_decoder import EncoderDecoderModel
from t5mtl.models.encoder_inputs import PrependVectors
from t5mtl.train import partitioning
from t5mtl.train.optimizers import create_optimizer
from t5mtl.train.train_step import create_train_state, jit_train_step, make_train_step
from t5mtl.train.model_dir import params_fingerprint, save_params
from t5mtl.train.trainer import CheckpointConfig, EvalConfig, train

PROMPT = ["encoder_input/.*"]


def _nbytes(tree):
    return sum(np.asarray(x).nbytes for x in jax.tree.leaves(tree))


def _batches(vocab, n, batch=4, enc_len=64, tgt_len=16):
    rng = np.random.RandomState(0)
    for _ in range(n):
        yield scoring_batch(rng.randint(2, vocab, (batch, enc_len)).tolist(),
                            rng.randint(2, vocab, (batch, tgt_len)).tolist())


def _step(model, tx, mesh, trainable_names):
    state, shardings = create_train_state(model.init_boxed, tx, jax.random.PRNGKey(0),
                                          rng=jax.random.PRNGKey(1), mesh=mesh,
                                          trainable_names=trainable_names)
    step = jit_train_step(make_train_step(model.loss_fn, tx, trainable_names=trainable_names,
                                          loss_denominator_fn=model.loss_denominator),
                          shardings, partitioning.batch_sharding(mesh), mesh)
    return state, step


@pytest.mark.slow
def test_prompt_only_step_on_t5_1_1_small_widths_computes_no_weight_gradients():
    # t5_1_1_small's widths (d_model 512, its 32k vocabulary), two layers a side.
    model = EncoderDecoderModel(get_config("t5_1_1_small", num_layers=2),
                                encoder_input=PrependVectors(20))
    names = list(param_names.flatten(model.abstract_params()))
    prompt = param_names.select(names, PROMPT)
    assert prompt == ["encoder_input/vectors"]
    tx = create_optimizer("adafactor", learning_rate=0.1)
    mesh = partitioning.create_mesh((1, 1, 1), jax.devices()[:1])
    batches = list(_batches(model.config.vocab_size, 3))
    batch = partitioning.host_batch_to_global(batches[0], mesh)

    flops = {}
    for kind, trainable in (("full", None), ("prompt", prompt)):
        state, step = _step(model, tx, mesh, trainable)
        compiled = step.lower(state, batch).compile()
        cost = compiled.cost_analysis()
        flops[kind] = float((cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"])
        if kind == "full":
            full_opt_bytes = _nbytes(state.opt_state)
            del state
    ratio = flops["prompt"] / flops["full"]
    print(f"prompt-only / full finetuning flops: {ratio:.3f} ({flops})")
    assert ratio <= 0.72, flops
    # The optimizer keeps the state of the 20 x 512 prompt and nothing else.
    alone = tx.init({"encoder_input": {"vectors": np.zeros((20, 512), np.float32)}})
    assert _nbytes(state.opt_state) == _nbytes(alone) < full_opt_bytes / 400

    before = jax.tree.map(np.array, state.params)
    for b in batches:
        state, metrics = compiled(state, partitioning.host_batch_to_global(b, mesh))
    after = jax.tree.map(np.asarray, state.params)
    for name, value in param_names.flatten(after).items():
        if name == "encoder_input/vectors":
            assert not np.array_equal(value, param_names.flatten(before)[name])
        else:
            assert np.array_equal(value, param_names.flatten(before)[name]), name
    assert np.isfinite(float(metrics["loss"])) and float(metrics["grad_norm"]) > 0


def _prompt_run(model_dir, base, num_steps, **checkpoint_kwargs):
    return train(str(model_dir),
                 model=EncoderDecoderModel(get_config("t5_tiny"), encoder_input=PrependVectors(4)),
                 data=DataConfig(mixture_or_task_name="synth_add", batch_size=8, pack=False,
                                 task_feature_lengths={"inputs": 32, "targets": 8}),
                 num_steps=num_steps, trainable_patterns=PROMPT,
                 optimizer=create_optimizer("adamw", learning_rate=0.1),
                 checkpoints=CheckpointConfig(period=3, async_save=False, init_from=str(base),
                                              **checkpoint_kwargs),
                 evaluation=EvalConfig(), log_period=1, show_progress=False)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    base = tmp_path_factory.mktemp("base")
    train(str(base), model=EncoderDecoderModel(get_config("t5_tiny")),
          data=DataConfig(mixture_or_task_name="synth_add", batch_size=8,
                          task_feature_lengths={"inputs": 32, "targets": 8}),
          num_steps=2, checkpoints=CheckpointConfig(async_save=False),
          evaluation=EvalConfig(), show_progress=False)
    return base


def test_trainable_only_checkpoints_refer_to_their_base(tmp_path, base_dir):
    run = tmp_path / "prompt"
    _prompt_run(run, base_dir, 3, save_trainable_only=True)
    saved = json.load(open(run / "model.json"))
    base_params = t5mtl.load(str(base_dir)).params
    assert saved["base"] == {"path": str(base_dir), "step": 2,
                             "fingerprint": params_fingerprint(base_params)}
    # The checkpoint holds the prompt alone.
    from t5mtl.train.model_dir import checkpoint_manager
    with checkpoint_manager(str(run), read_only=True) as mngr:
        meta = mngr.item_metadata(3)["params"]
    assert list(param_names.flatten(dict(getattr(meta, "tree", meta)))) == \
        ["encoder_input/vectors"]
    # Loading joins it with the base; the frozen params are the base's.
    loaded, base = t5mtl.load(str(run)), t5mtl.load(str(base_dir))
    flat, base_flat = param_names.flatten(loaded.params), param_names.flatten(base.params)
    assert flat.keys() - base_flat.keys() == {"encoder_input/vectors"}
    for name, value in base_flat.items():
        assert np.array_equal(flat[name], value), name
    assert loaded.generate(["1 + 2 ="], max_new_tokens=4)[0] is not None

    # Resuming (3 -> 5) gives the prompt of an uninterrupted 5-step run.
    _prompt_run(run, base_dir, 5, save_trainable_only=True)
    _prompt_run(tmp_path / "straight", base_dir, 5)
    np.testing.assert_array_equal(t5mtl.load(str(run)).params["encoder_input"]["vectors"],
                                  t5mtl.load(str(tmp_path / "straight")).params[
                                      "encoder_input"]["vectors"])


def test_a_changed_base_is_refused(tmp_path, base_dir):
    base = tmp_path / "base"
    shutil.copytree(base_dir, base)
    run = tmp_path / "prompt"
    _prompt_run(run, base, 3, save_trainable_only=True)
    # The base's step 2 is rewritten with other values (as if retrained).
    params = t5mtl.load(str(base)).params
    shutil.rmtree(base / "checkpoints" / "2")
    save_params(str(base), jax.tree.map(lambda x: x * 1.5, params), step=2)
    with pytest.raises(T5mtlError, match=r"trained on the base .* whose parameters have "
                                         r"changed since"):
        t5mtl.load(str(run))
    with pytest.raises(T5mtlError, match="whose parameters have changed since"):
        _prompt_run(run, base, 5, save_trainable_only=True)


def test_trainable_only_needs_a_base_and_a_subset(tmp_path, base_dir):
    with pytest.raises(T5mtlError, match="save_trainable_only needs"):
        train(str(tmp_path / "x"), model=EncoderDecoderModel(get_config("t5_tiny")),
              data=DataConfig(mixture_or_task_name="synth_add"), num_steps=1,
              checkpoints=CheckpointConfig(save_trainable_only=True), show_progress=False)
    with pytest.raises(T5mtlError, match="trainable pattern 'encodr/.*' matches no parameter"):
        train(str(tmp_path / "y"), model=EncoderDecoderModel(get_config("t5_tiny")),
              data=DataConfig(mixture_or_task_name="synth_add"), num_steps=1,
              trainable_patterns=["encodr/.*"], show_progress=False)


def test_selection_by_patterns():
    names = ["encoder/a/kernel", "encoder/b/scale", "decoder/a/kernel", "encoder_input/vectors"]
    assert param_names.select(names) is None
    assert param_names.select(names, frozen_patterns=["encoder/.*"]) == \
        ["decoder/a/kernel", "encoder_input/vectors"]
    assert param_names.select(names, [".*/kernel"], ["decoder/.*"]) == ["encoder/a/kernel"]
    with pytest.raises(T5mtlError, match="leave no parameter"):
        param_names.select(names, ["encoder/.*"], [".*"])
    with pytest.raises(T5mtlError, match=r"bad frozen pattern '\[x'"):
        param_names.select(names, frozen_patterns=["[x"])
