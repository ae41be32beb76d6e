"""The adapters' gradients through the full model against an independent
computation, with the scan over layers off and on: a soft prompt's is the
plain model's gradient with respect to ordinary input embeddings; LoRA's
factors' are the chain rule through the merged kernel's gradient. (Finite
differences: tests/peft/test_prompt_tuning.py and tests/peft/test_lora.py.)"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t5mtl.data.batches import scoring_batch
from t5mtl.models import get_config, param_names
from t5mtl.models.encoder_decoder import EncoderDecoderModel
from t5mtl.peft import LoRA, PromptTuning

P = 4
FREE_IDS = np.arange(370, 370 + P)      # t5_tiny's table has rows past the byte vocabulary
# The three kernel layouts: query and value [embed, heads, kv], attention out
# [heads, kv, embed] (two input axes) and wo [mlp, embed].
LORA = LoRA(rank=2, alpha=5.0, patterns=[r".*attention/(query|value|out)/kernel",
                                         r".*mlp/wo/kernel"])


def _batch(seed, enc_len):
    # Ragged inputs (the shorter row is padded) and targets, ids below FREE_IDS.
    rng = np.random.RandomState(seed)
    return scoring_batch(
        [rng.randint(3, 300, enc_len).tolist(), rng.randint(3, 300, enc_len - 3).tolist()],
        [rng.randint(3, 300, 5).tolist(), rng.randint(3, 300, 3).tolist()])


def _random_params(model, seed=0):
    """Gaussian values in the model's parameter shapes (norm scales near 1,
    embeddings and the prompt at the inits' scales, the rest at 0.1): any
    point will do for a gradient identity, and compiling the model's own
    init costs more than every gradient here."""
    rng = np.random.RandomState(seed)
    shapes = param_names.flatten(jax.eval_shape(
        lambda: nn.unbox(model.init_boxed(jax.random.PRNGKey(0)))))
    std = lambda name: (1.0 if "token_embedder" in name else 0.5 if name.startswith(
        "encoder_input") else 0.2 if name.startswith("lora") else 0.1)
    return param_names.unflatten({
        name: jnp.asarray((1.0 if name.endswith("/scale") else 0.0)
                          + std(name) * rng.normal(size=s.shape), s.dtype)
        for name, s in shapes.items()})


@functools.lru_cache(maxsize=None)
def _setup(scan):
    """(config, params of a model with both adapters, the plain model's
    jitted value and gradient), once per scan setting for both tests."""
    cfg = get_config("t5_tiny", scan_layers=scan)
    both = EncoderDecoderModel(cfg, encoder_input=PromptTuning(P, init="random_uniform"),
                               weight_adapter=LORA)
    params = _random_params(both)
    plain = EncoderDecoderModel(cfg)
    plain_grad = jax.jit(jax.value_and_grad(lambda p, batch: plain.loss_fn(p, batch, None)[0]))
    return cfg, params, plain_grad


@pytest.mark.parametrize("scan", [False, True])
def test_prompt_gradient_is_the_input_embedding_gradient(scan):
    """A prompt [P, d] on a frozen model computes what the plain model
    computes on rows that start with P extra tokens whose embeddings are the
    prompt (t5_tiny's logits are untied from the embedding): the loss is the
    same, and the prompt's gradient is the plain model's gradient with
    respect to those P embedding rows (summed over the batch, as the prompt
    is shared by every row)."""
    cfg, params, plain_grad = _setup(scan)
    prompted = EncoderDecoderModel(cfg, encoder_input=PromptTuning(P, init="random_uniform"))
    batch = _batch(0, 12)
    vectors = params["encoder_input"]["vectors"]
    assert float(jnp.abs(vectors).max()) > 0.1
    base = {k: v for k, v in params.items() if k not in ("encoder_input", "lora")}
    enc = np.asarray(batch["encoder_input_tokens"])
    assert not np.isin(enc, FREE_IDS).any() and (enc == 0).any()      # padded, ids free
    ordinary = {**batch, "encoder_input_tokens": jnp.asarray(
        np.concatenate([np.broadcast_to(FREE_IDS, (enc.shape[0], P)), enc], axis=1))}

    def prompt_loss(v):
        return prompted.loss_fn({**base, "encoder_input": {"vectors": v}}, batch, None)[0]

    table = base["token_embedder"]["embedding"].at[FREE_IDS].set(vectors)
    loss_a, grad_prompt = jax.jit(jax.value_and_grad(prompt_loss))(vectors)
    loss_b, grads = plain_grad({**base, "token_embedder": {"embedding": table}}, ordinary)
    grad_table = grads["token_embedder"]["embedding"]
    np.testing.assert_allclose(float(loss_a), float(loss_b), rtol=1e-6)
    grad_prompt, grad_table = np.asarray(grad_prompt), np.asarray(grad_table)
    scale = np.abs(grad_prompt).max()
    assert scale > 1e-4
    np.testing.assert_allclose(grad_prompt, grad_table[FREE_IDS], rtol=1e-4, atol=1e-5 * scale)


def _factor_pairs(lora_params):
    flat = param_names.flatten(lora_params)
    return sorted({n.rsplit("/", 1)[0] for n in flat}), flat


@pytest.mark.parametrize("scan", [False, True])
def test_lora_factor_gradients_from_the_merged_kernel_gradient(scan):
    """W' = W + s A B, so with G = dL/dW' (the plain model's gradient at the
    merged weights): dL/dA = s G B^T and dL/dB = s A^T G, per layer when the
    layers are scanned. The kernels cover the three layouts: query and value
    [embed, heads, kv], attention out [heads, kv, embed] (two input axes)
    and wo [mlp, embed]."""
    cfg, params, plain_grad = _setup(scan)
    model = EncoderDecoderModel(cfg, weight_adapter=LORA)
    params = {k: v for k, v in params.items() if k != "encoder_input"}     # A, B both random
    batch = _batch(2, 12 + P)           # the prompt test's shapes: one plain-model compile

    def adapted_loss(factors):
        return model.loss_fn({**params, "lora": factors}, batch, None)[0]

    adapted, grad_factors = jax.jit(jax.value_and_grad(adapted_loss))(params["lora"])
    merged, grad_weights = plain_grad(jax.jit(LORA.merge)(params), batch)
    np.testing.assert_allclose(float(merged), float(adapted), rtol=1e-6)
    grad_weights = param_names.flatten(grad_weights)
    names, factors = _factor_pairs(params["lora"])
    _, grads = _factor_pairs(grad_factors)
    # Per layer: 3 encoder kernels + wo, 6 decoder kernels + wo; two layers or one scanned stack.
    assert len(names) == (11 if scan else 22)
    lead = 1 if scan else 0
    s = LORA.scale
    for name in names:
        a = np.asarray(factors[f"{name}/a"], np.float64)
        b = np.asarray(factors[f"{name}/b"], np.float64)
        g = np.asarray(grad_weights[name], np.float64)
        lead_shape = a.shape[:lead]
        a2 = a.reshape(lead_shape + (-1, a.shape[-1]))            # [*lead, in, r]
        b2 = b.reshape(lead_shape + (b.shape[lead], -1))           # [*lead, r, out]
        g2 = g.reshape(lead_shape + (a2.shape[-2], b2.shape[-1]))  # [*lead, in, out]
        expected_a = s * g2 @ np.swapaxes(b2, -1, -2)
        expected_b = s * np.swapaxes(a2, -1, -2) @ g2
        for got, want in ((grads[f"{name}/a"], expected_a), (grads[f"{name}/b"], expected_b)):
            want = want.reshape(got.shape)
            scale = np.abs(want).max()
            assert scale > 1e-6, name
            np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5 * scale,
                                       err_msg=name)
