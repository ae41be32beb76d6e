"""The training loop: exact resume after SIGKILL, torn checkpoints, NaN loss,
finetuning init with partial restore, and what a run leaves in model_dir."""
import os
import signal

import jax
import numpy as np
import optax
import pytest

import t5mtl
import t5mtl.data.registry  # noqa: F401  (registers the synthetic suite)
from t5mtl.errors import T5mtlError
from t5mtl.models import get_config
from t5mtl.models.encoder_decoder import EncoderDecoderModel
from t5mtl.train.checkpointer import TrainCheckpointer
from t5mtl.train.init_from import merge_params
from t5mtl.data.data_config import DataConfig
from t5mtl.train.trainer import CheckpointConfig, EvalConfig, train
from t5mtl.train.train_step import TrainState

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

def _flat(tree):
    return {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(v)
            for path, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _tiny_state(value):
    params = {"w": np.full((4, 3), value, np.float32)}
    tx = optax.sgd(0.1)
    return TrainState(step=np.int32(value), params=params, opt_state=tx.init(params),
                      rng=np.zeros((2,), np.uint32))


def _abstract(state):
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype,
                                                       sharding=sharding), state)


def test_torn_checkpoints_are_skipped(tmp_path, caplog):
    ckpt = TrainCheckpointer(str(tmp_path), async_save=False)
    for step in (1, 2):
        ckpt.save(_tiny_state(step), data_position=step * 10)
    ckpt.close()
    # A save killed midway: orbax's temporary directory, never renamed.
    torn = tmp_path / "checkpoints" / "3.orbax-checkpoint-tmp-1234"
    (torn / "params").mkdir(parents=True)
    # And a step whose params files were truncated after the fact.
    params_dir = tmp_path / "checkpoints" / "2" / "params"
    for root, _, files in os.walk(params_dir):
        for f in files:
            open(os.path.join(root, f), "w").close()
    with caplog.at_level("WARNING"):
        ckpt = TrainCheckpointer(str(tmp_path), async_save=False)
        state, position = ckpt.restore(_abstract(_tiny_state(0)))
    assert int(state.step) == 1 and position == 10
    assert np.all(np.asarray(state.params["w"]) == 1.0)
    text = caplog.text
    assert "3.orbax-checkpoint-tmp-1234" in text and "unreadable checkpoint" in text


def _train_tiny(model_dir, **kwargs):
    args = dict(model=EncoderDecoderModel(get_config("t5_tiny")),
                data=DataConfig(mixture_or_task_name="synth_parity",
                                task_feature_lengths={"inputs": 32, "targets": 8}, batch_size=8),
                num_steps=3, checkpoints=CheckpointConfig(period=100, async_save=False),
                evaluation=EvalConfig(), log_period=1, show_progress=False)
    args.update(kwargs)
    return train(str(model_dir), **args)


def test_unknown_task_is_named(tmp_path):
    with pytest.raises(T5mtlError, match="'synth_nope'"):
        _train_tiny(tmp_path, data=DataConfig(mixture_or_task_name="synth_nope"))


def test_finetune_init_restores_by_name_and_keeps_fresh_patterns(tmp_path):
    _train_tiny(tmp_path / "pre", optimizer=optax.adamw(1e-2))
    pre = _flat(t5mtl.load(str(tmp_path / "pre")).params)
    # Zero learning rate: after one step the params are exactly the init.
    summary = _train_tiny(tmp_path / "ft", optimizer=optax.sgd(0.0), num_steps=1,
                          checkpoints=CheckpointConfig(
                              period=100, async_save=False, init_from=str(tmp_path / "pre"),
                              init_fresh_patterns=["decoder/logits_dense/.*"]))
    assert summary["step"] == 1              # the step restarted at 0
    ft = _flat(t5mtl.load(str(tmp_path / "ft")).params)
    for k in pre:
        if k.startswith("decoder/logits_dense"):
            assert not np.array_equal(ft[k], pre[k]), k
        else:
            assert np.array_equal(ft[k], pre[k]), k


def test_merge_params_reports_fresh_names_and_shape_mismatch():
    fresh = {"a": {"w": np.zeros(2)}, "prompt": {"p": np.ones(3)}}
    merged, kept = merge_params(fresh, {"a": {"w": np.full(2, 5.0)}})
    assert merged["a"]["w"].tolist() == [5.0, 5.0] and kept == ["prompt/p"]
    with pytest.raises(T5mtlError, match=r"'a/w' has shape \(3,\)"):
        merge_params(fresh, {"a": {"w": np.zeros(3)}})


def test_keep_best_keeps_the_best_metric(tmp_path):
    ckpt = TrainCheckpointer(str(tmp_path), keep=1, keep_best_metric="eval/t/accuracy",
                             async_save=False)
    for step, acc in ((1, 50.0), (2, 90.0), (3, 70.0)):
        ckpt.save(_tiny_state(step), data_position=step, metrics={"eval/t/accuracy": acc})
    ckpt.close()
    steps = sorted(int(d) for d in os.listdir(tmp_path / "checkpoints") if d.isdigit())
    assert steps == [2]


# A tiny run through `t5mtl train`, in-process (config.gin included).
TINY_ARGS = [
    "--gin_file=gin/runs/quickstart.gin",
    "--gin.get_config.name='t5_tiny'",
    "--gin.DataConfig.mixture_or_task_name='synth_parity'",
    "--gin.DataConfig.task_feature_lengths={'inputs': 32, 'targets': 8}",
    "--gin.DataConfig.batch_size=8",
    "--gin.EvalConfig.tasks=[]",
    "--gin.train.num_steps=2",
    "--gin.train.log_period=1",
    "--gin.train.show_progress=False",
    "--gin.CheckpointConfig.period=1",
    "--gin.CheckpointConfig.async_save=False",
]


def _files(model_dir):
    """relative path -> sha256 of every file under model_dir."""
    import hashlib
    out = {}
    for root, _, files in os.walk(model_dir):
        for f in files:
            path = os.path.join(root, f)
            out[os.path.relpath(path, model_dir)] = hashlib.sha256(open(path, "rb").read()
                                                                  ).hexdigest()
    return out


def _cli_train(model_dir, *extra):
    import gin
    from t5mtl import cli
    gin.clear_config()
    return cli.main(["train", f"--model_dir={model_dir}", *TINY_ARGS, *extra])


@pytest.mark.slow
def test_incompatible_checkpoint_is_refused_and_left_intact(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    run = str(tmp_path / "run")
    assert _cli_train(run) == 0
    before = _files(run)
    assert {"checkpoints/1/commit_success.txt", "checkpoints/2/commit_success.txt",
            "model.json", "config.gin", "metrics.jsonl"} <= before.keys()
    capsys.readouterr()

    # Resuming with another architecture: the differing model.json field.
    assert _cli_train(run, "--gin.get_config.d_model=96", "--gin.train.num_steps=4") == 2
    err = capsys.readouterr().err
    assert f"t5mtl train: error: {run} holds checkpoints (latest: step 2) of another model: " \
           f"d_model is 64 in model.json but 96 in this run. Nothing in {run} was changed" in err
    assert _files(run) == before

    # Same architecture, other optimizer (AdamW's state vs Adafactor's): the
    # checkpoint's saved shapes name what differs.
    assert _cli_train(run, "--gin.create_optimizer.name='adamw'",
                      "--gin.train.num_steps=4") == 2
    err = capsys.readouterr().err
    assert (f"t5mtl train: error: {run}/checkpoints/2 does not fit this run's optimizer "
            f"(another optimizer or another set of frozen parameters wrote it): its slots are "
            f"0/count, 0/v, 0/v_col, 0/v_row, 2/count but this run's are 0/count, 0/mu, 0/nu, "
            f"2/count. Nothing in {run} was changed") in err
    assert _files(run) == before

    # Without model.json the checkpoint's parameter shapes still catch it.
    os.rename(os.path.join(run, "model.json"), str(tmp_path / "model.json"))
    with pytest.raises(T5mtlError, match=r"checkpoints/2 does not fit this run: 50 parameter "
                       r"shape\(s\) differ: 'decoder/decoder_norm/scale' is \(64,\) in the "
                       r"checkpoint but \(96,\) in this run"):
        _train_tiny(run, model=EncoderDecoderModel(get_config("t5_tiny", d_model=96)))
    os.rename(str(tmp_path / "model.json"), os.path.join(run, "model.json"))
    assert _files(run) == before

    # Finetuning init from it into another shape, without fresh patterns.
    ft = str(tmp_path / "ft")
    assert _cli_train(ft, "--gin.get_config.d_model=96",
                      f"--gin.CheckpointConfig.init_from='{run}'") == 2
    err = capsys.readouterr().err
    assert (f"t5mtl train: error: init_from '{run}': 50 parameter shape(s) differ from this "
            f"model: 'decoder/decoder_norm/scale' has shape (64,) in the source but (96,) in "
            f"this model") in err
    assert "CheckpointConfig.init_fresh_patterns" in err
    assert _files(run) == before
    assert not [d for d in os.listdir(os.path.join(ft, "checkpoints")) if d.isdigit()]
    assert not os.path.exists(os.path.join(ft, "model.json"))

    # The refused runs changed nothing, and the checkpoint still loads.
    assert t5mtl.load(run).config.d_model == 64


def test_stop_flag_agreement_mechanism(monkeypatch):
    """One process: the Python handler and no collective at all. Several: JAX's
    preemption sync point (no Python handler, which would replace the
    notifier jax.distributed installed), or, with the preemption service
    disabled, the handler's flag all-gathered every step."""
    from jax.experimental import multihost_utils
    from t5mtl.train.preemption import StopFlag as _StopFlag

    def no_collective(*args):
        raise AssertionError("a single process must not synchronize")
    monkeypatch.setattr(multihost_utils, "process_allgather", no_collective)
    monkeypatch.setattr(multihost_utils, "reached_preemption_sync_point", no_collective)
    with _StopFlag() as stop:
        assert not stop.reached(0)
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.reached(1) and stop.set

    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: True)
    seen = []
    monkeypatch.setattr(multihost_utils, "reached_preemption_sync_point",
                        lambda step: seen.append(step) or step == 3)
    handler = signal.getsignal(signal.SIGTERM)
    with _StopFlag() as stop:
        assert signal.getsignal(signal.SIGTERM) is handler
        assert [stop.reached(s) for s in range(4)] == [False, False, False, True]
    assert seen == [-1, 0, 1, 2, 3]

    def disabled(step):
        raise RuntimeError("Preemption sync manager has not been initialized")
    monkeypatch.setattr(multihost_utils, "reached_preemption_sync_point", disabled)
    other_process = [False, True]                  # process 1 gets SIGTERM before step 2
    monkeypatch.setattr(multihost_utils, "process_allgather",
                        lambda flag: np.array([bool(flag), other_process.pop(0)]))
    with _StopFlag() as stop:
        assert [stop.reached(s) for s in range(2)] == [False, True]


@pytest.mark.parametrize("keep,min_temp_bytes,waits", [
    (True, 0, True), (False, 0, False), (True, 256 << 20, False)])
def test_on_cpu_under_the_keep_policy_the_loop_waits_for_each_large_step(
        tmp_path, monkeypatch, keep, min_temp_bytes, waits):
    """One step in flight (t5mtl.train.dispatch.one_step_in_flight) under
    the keep malloc policy for steps whose temporary buffer is large: the
    loop blocks on the state the previous step returned, once per step. By
    default, and for the tiny model's small buffer, it dispatches
    asynchronously."""
    from t5mtl import host_memory
    from t5mtl.train import dispatch, trainer
    monkeypatch.setattr(host_memory, "keeps_freed_memory", lambda *a: keep)
    monkeypatch.setattr(dispatch, "ONE_STEP_MIN_TEMP_BYTES", min_temp_bytes)
    waited = []
    real = jax.block_until_ready
    monkeypatch.setattr(trainer.jax, "block_until_ready",
                        lambda x: waited.append(int(real(x).step)) or x)
    summary = _train_tiny(tmp_path, num_steps=3)
    assert summary["step"] == 3
    assert waited == ([0, 1, 2] if waits else [])


def test_a_vocabulary_larger_than_the_embedding_is_refused_before_writing(tmp_path):
    # Ids past the embedding gather as NaN rows: the run would train on NaN
    # until the non-finite guard stopped it. One line naming both sizes instead.
    from t5mtl.data import vision_tasks
    from t5mtl.models.clip import CLIP
    from t5mtl.models.vit import get_vit_config
    mixture = vision_tasks.register_clip_pretrain()            # wordpiece_en: 8,000 ids
    model = CLIP(vision=get_vit_config("vit_tiny"), text=get_config("t5_tiny"))   # 384 ids
    model_dir = tmp_path / "run"
    try:
        with pytest.raises(T5mtlError, match=r"'clip_pretrain'.* 8000 ids.* embeds 384"):
            train(str(model_dir), model=model, num_steps=1,
                  data=DataConfig(mixture_or_task_name=mixture, batch_size=4, pack=False,
                                  task_feature_lengths={"targets": 8}))
    finally:
        vision_tasks.unregister()
    assert not model_dir.exists()
