"""A model class defined only here, behind t5mtl.models.base.BaseModel, is
selected by gin, trained and evaluated by `t5mtl train`, reloaded by
`t5mtl.load` from its model.json, and decoded."""
import json
import os

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np

import t5mtl
from t5mtl.cli import main
from t5mtl.models import losses
from t5mtl.models.base import BaseModel
from t5mtl.models.decoding import sample_loop

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class _ToyModule(nn.Module):
    """Two layers: the encoder is the mean of the input embeddings through a
    dense layer; the decoder reads the previous token and that vector."""
    vocab_size: int
    dim: int

    @nn.compact
    def __call__(self, encoder_tokens, decoder_tokens):
        embed = nn.Embed(self.vocab_size, self.dim, name="embed")
        real = (encoder_tokens > 0)[..., None]
        pooled = jnp.sum(embed(encoder_tokens) * real, 1) / jnp.maximum(jnp.sum(real, 1), 1)
        encoded = nn.Dense(self.dim, name="encoder")(pooled)
        h = nn.relu(nn.Dense(self.dim, name="decoder")(embed(decoder_tokens)
                                                        + encoded[:, None, :]))
        return nn.Dense(self.vocab_size, name="logits")(h)


@gin.configurable
class ToyModel(BaseModel):
    def __init__(self, vocab_size: int = 384, dim: int = 32):
        self.vocab_size, self.dim = vocab_size, dim
        self.module = _ToyModule(vocab_size, dim)

    def spec(self):
        return {"vocab_size": self.vocab_size, "dim": self.dim}

    def init_boxed(self, rng):
        dummy = jnp.ones((1, 4), jnp.int32)
        return self.module.init(rng, dummy, dummy)["params"]

    def _logits(self, params, batch):
        return self.module.apply({"params": params}, batch["encoder_input_tokens"],
                                 batch["decoder_input_tokens"])

    def loss_denominator(self, batch, num_tasks=0):
        return {"loss": losses.loss_denominator(batch["decoder_loss_weights"])}

    def loss_fn(self, params, batch, dropout_rng, num_tasks=0):
        denominator = batch.get(losses.LOSS_DENOMINATOR_KEY) or {}
        return losses.cross_entropy_with_z_loss(
            self._logits(params, batch), batch["decoder_target_tokens"],
            batch["decoder_loss_weights"], loss_denominator=denominator.get("loss"),
            task_ids=batch.get("decoder_task_ids"), num_tasks=num_tasks)

    def score_batch(self, params, batch):
        logp = jax.nn.log_softmax(self._logits(params, batch))
        tok = jnp.take_along_axis(logp, batch["decoder_target_tokens"][..., None], -1)[..., 0]
        return jnp.sum(tok * (batch["decoder_target_tokens"] > 0), -1)

    def predict_batch(self, params, batch, decode=None, rng=None):
        """Greedy, recomputing the decoder at each step (no cache)."""
        n = 8 if decode is None else decode.max_decode_length
        enc = jnp.asarray(batch["encoder_input_tokens"])
        dec = jnp.zeros((enc.shape[0], n), jnp.int32)

        def logits_at(dec, position):
            return self.module.apply({"params": params}, enc, dec)[:, position]

        def step(dec, tokens, position):
            dec = dec.at[:, position].set(tokens)
            return logits_at(dec, position), dec

        return sample_loop(logits_at(dec, 0), dec, step, n, jax.random.PRNGKey(0))


def test_a_test_defined_model_trains_reloads_and_decodes(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    run = str(tmp_path / "toy")
    gin.clear_config()
    assert main(["train", f"--model_dir={run}", "--gin_file=gin/runs/quickstart.gin",
                 "--gin.train.model=@ToyModel()", "--gin.ToyModel.dim=48",
                 "--gin.DataConfig.mixture_or_task_name=['synth_add', 'synth_parity']",
                 "--gin.DataConfig.batch_size=16", "--gin.train.num_steps=40",
                 "--gin.train.log_period=20", "--gin.train.show_progress=False",
                 "--gin.create_optimizer.name='adamw'",
                 "--gin.learning_rate_schedule.base_learning_rate=0.01",
                 "--gin.EvalConfig.tasks=['synth_parity']", "--gin.EvalConfig.num_examples=16",
                 "--gin.CheckpointConfig.async_save=False"]) == 0
    saved = json.load(open(os.path.join(run, "model.json")))
    assert saved["model"] == {"class": f"{__name__}:ToyModel",
                              "spec": {"vocab_size": 384, "dim": 48}}
    rows = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
    train_rows = [r for r in rows if r["split"] == "train"]
    assert train_rows[-1]["loss"] < train_rows[0]["loss"]
    assert "task/synth_parity/loss" in train_rows[-1]
    assert any(r["split"] == "eval" and "synth_parity/accuracy" in r for r in rows)

    loaded = t5mtl.load(run)
    assert isinstance(loaded.model, ToyModel) and loaded.model.dim == 48
    assert loaded.params["logits"]["kernel"].shape == (48, 384)
    texts = loaded.generate(["Is the number of 1s even or odd? 1101", "Add: 3 + 4"],
                            max_new_tokens=8)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    # Decoded ids are the step-by-step argmax of the reloaded params.
    enc = np.array([[5, 6, 7, 1]], np.int32)
    ids = np.asarray(loaded.generate(enc, max_new_tokens=4))[0]
    dec_in, want = np.zeros((1, 4), np.int32), np.zeros(4, np.int32)
    for i in range(4):
        logits = loaded.model._logits(loaded.params, {"encoder_input_tokens": enc,
                                                      "decoder_input_tokens": dec_in})
        want[i] = int(np.argmax(logits[0, i]))
        if want[i] == 1:
            break
        if i + 1 < 4:
            dec_in[0, i + 1] = want[i]
    np.testing.assert_array_equal(ids, want)
    assert loaded.score(["Add: 3 + 4"], ["7"]).shape == (1,)
