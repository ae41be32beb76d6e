"""t5mtl's ViT: forward and backward parity with HF transformers' ViTModel at two
patch sizes, scanned == unscanned, the video variant, configs, pixel checks
and logical axis names."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t5mtl.errors import T5mtlError
from t5mtl.models.vit import (VIT_CONFIGS, ViTConfig, VisionTransformer, check_pixels,
                              get_vit_config, patchify)

TINY = VIT_CONFIGS["vit_tiny"]
VIDEO = VIT_CONFIGS["vit_tiny_video"]


@functools.partial(jax.jit, static_argnums=0)
def _apply(cfg, params, pixels):
    return VisionTransformer(cfg).apply({"params": params}, pixels)


def _init(cfg, seed=0):
    pixels = jnp.zeros((1,) + cfg.pixel_shape, jnp.float32)
    return nn.unbox(VisionTransformer(cfg).init(jax.random.PRNGKey(seed), pixels)["params"])


def _pixels(cfg, batch=2, seed=0):
    return np.random.RandomState(seed).uniform(0, 1, (batch,) + cfg.pixel_shape).astype(np.float32)


# -- HF parity -------------------------------------------------------------------

def hf_to_params(state: dict, cfg: ViTConfig) -> dict:
    """HF ViTModel state dict (numpy) -> t5mtl's unscanned params. Linear in the
    weights (transposes and reshapes), so it converts gradients too."""
    h, k, d = cfg.num_heads, cfg.head_dim, cfg.hidden_size
    dense = lambda w, b: {"kernel": w.T, "bias": b}
    norm = lambda name: {"scale": state[f"{name}.weight"], "bias": state[f"{name}.bias"]}
    params = {
        "patch_embedding": {
            "kernel": state["embeddings.patch_embeddings.projection.weight"].transpose(2, 3, 1, 0),
            "bias": state["embeddings.patch_embeddings.projection.bias"]},
        "cls_token": state["embeddings.cls_token"].reshape(d),
        "position_embedding": state["embeddings.position_embeddings"][0],
        "encoder_norm": norm("layernorm"),
    }
    for i in range(cfg.num_layers):
        pre = f"layers.{i}"
        attn = {name: {"kernel": state[f"{pre}.attention.{hf}_proj.weight"].T.reshape(d, h, k),
                       "bias": state[f"{pre}.attention.{hf}_proj.bias"].reshape(h, k)}
                for name, hf in (("query", "q"), ("key", "k"), ("value", "v"))}
        attn["out"] = {"kernel": state[f"{pre}.attention.o_proj.weight"].T.reshape(h, k, d),
                       "bias": state[f"{pre}.attention.o_proj.bias"]}
        params[f"layers_{i}"] = {
            "pre_attention_layer_norm": norm(f"{pre}.layernorm_before"),
            "attention": attn,
            "pre_mlp_layer_norm": norm(f"{pre}.layernorm_after"),
            "mlp": {"wi": dense(state[f"{pre}.mlp.fc1.weight"], state[f"{pre}.mlp.fc1.bias"]),
                    "wo": dense(state[f"{pre}.mlp.fc2.weight"], state[f"{pre}.mlp.fc2.bias"])},
        }
    return params


def _hf_model(cfg: ViTConfig, seed: int):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    hf_cfg = transformers.ViTConfig(
            hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
            num_attention_heads=cfg.num_heads, intermediate_size=cfg.mlp_dim,
            hidden_act="gelu", layer_norm_eps=cfg.layer_norm_eps, image_size=cfg.image_size,
            patch_size=cfg.patch_size, num_channels=cfg.channels, qkv_bias=True,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    hf_cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = transformers.ViTModel(hf_cfg, add_pooling_layer=False).eval()
    with torch.no_grad():     # HF initializes biases to 0 and norms to 1: randomize all
        for name, p in model.named_parameters():
            base = 1.0 if "layernorm" in name and name.endswith(".weight") else 0.0
            p.copy_(base + 0.2 * torch.randn_like(p))
    return torch, model


@pytest.mark.parametrize("patch_size", [2, 4])
def test_forward_and_backward_match_hf_vit(patch_size):
    """Tokens and the gradients of sum(tokens * R) w.r.t. the pixels and every
    weight equal torch autograd through HF's ViTModel (float32)."""
    cfg = TINY.replace(patch_size=patch_size)
    torch, model = _hf_model(cfg, seed=patch_size)
    pixels = _pixels(cfg, batch=2, seed=patch_size)
    weights = np.random.RandomState(7).standard_normal(
            (2, cfg.num_tokens, cfg.hidden_size)).astype(np.float32)

    x = torch.tensor(pixels.transpose(0, 3, 1, 2), requires_grad=True)    # NCHW
    out = model(pixel_values=x).last_hidden_state
    (out * torch.tensor(weights)).sum().backward()
    ref = out.detach().numpy()
    ref_pixel_grad = x.grad.numpy().transpose(0, 2, 3, 1)
    state = {k: v.detach().numpy() for k, v in model.named_parameters()}
    grads = {k: v.grad.numpy() for k, v in model.named_parameters()}
    params = hf_to_params(state, cfg)
    ref_param_grads = hf_to_params(grads, cfg)

    def loss(p, px):
        y = VisionTransformer(cfg).apply({"params": p}, px)
        return jnp.sum(y * weights), y
    (_, tokens), (param_grads, pixel_grad) = jax.jit(
            jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(params, pixels)

    assert tokens.shape == ref.shape == (2, cfg.num_tokens, cfg.hidden_size)
    assert float(np.max(np.abs(ref))) > 1.0            # not a degenerate output
    np.testing.assert_allclose(tokens, ref, atol=2e-5, rtol=0)
    np.testing.assert_allclose(pixel_grad, ref_pixel_grad, rtol=1e-4,
                               atol=1e-5 * np.max(np.abs(ref_pixel_grad)))
    flat_ref = dict(jax.tree_util.tree_leaves_with_path(ref_param_grads))
    flat = dict(jax.tree_util.tree_leaves_with_path(param_grads))
    assert flat.keys() == flat_ref.keys()
    scale = max(float(np.max(np.abs(r))) for r in flat_ref.values())
    for path, g in flat.items():
        r, name = flat_ref[path], jax.tree_util.keystr(path)
        assert g.shape == r.shape, name
        if "['key']['bias']" in name:    # softmax ignores a shift of all scores: exactly 0
            assert np.max(np.abs(g)) < 1e-6 * scale and np.max(np.abs(r)) < 1e-6 * scale
            continue
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5 * np.max(np.abs(r)), err_msg=name)


def test_patchify_is_hf_conv_order():
    """Patch j of an image is the pixels of grid cell (j // (W/p), j % (W/p))."""
    img = np.arange(2 * 8 * 8 * 3, dtype=np.float32).reshape(2, 8, 8, 3)
    patches = np.asarray(patchify(jnp.asarray(img), 4))
    assert patches.shape == (2, 4, 4, 4, 3)
    for j in range(4):
        r, c = divmod(j, 2)
        np.testing.assert_array_equal(patches[:, j], img[:, 4 * r:4 * r + 4, 4 * c:4 * c + 4])


# -- bad pixels ------------------------------------------------------------------

@pytest.mark.parametrize("cfg,pixels,message", [
    (TINY, np.zeros((2, 8, 8), np.int32),
     "feature 'image': expected float pixels [batch, 16, 16, 3], got int32 [2, 8, 8]"),
    (TINY, np.zeros((16, 16, 3), np.float32),          # no batch axis
     "feature 'image': expected float pixels [batch, 16, 16, 3], got float32 [16, 16, 3]"),
    (TINY, np.zeros((2, 16, 16, 1), np.float32),       # wrong channels
     "feature 'image': expected float pixels [batch, 16, 16, 3], got float32 [2, 16, 16, 1]"),
    (TINY, np.zeros((2, 16, 16, 3), np.uint8),         # integer dtype
     "feature 'image': expected float pixels [batch, 16, 16, 3], got uint8 [2, 16, 16, 3]"),
    (VIDEO, np.zeros((2, 16, 16, 3), np.float32),      # an image given to a video model
     "feature 'image': expected float pixels [batch, 4, 16, 16, 3], got float32 [2, 16, 16, 3]"),
    (VIDEO, np.zeros((2, 3, 16, 16, 3), np.float32),   # wrong number of frames
     "feature 'image': expected float pixels [batch, 4, 16, 16, 3], got float32 [2, 3, 16, 16, 3]"),
])
def test_bad_pixels_raise_one_line_naming_the_feature(cfg, pixels, message):
    with pytest.raises(T5mtlError) as err:
        check_pixels(pixels, cfg, "image")
    assert str(err.value) == message


def test_good_pixels_pass_and_the_module_checks_its_input():
    check_pixels(np.zeros((3, 16, 16, 3), np.float32), TINY, "image")
    check_pixels(jnp.zeros((1, 4, 16, 16, 3), jnp.bfloat16), VIDEO, "video")
    with pytest.raises(T5mtlError, match=r"^feature 'pixels': expected float pixels "
                                         r"\[batch, 16, 16, 3\], got float32 \[2, 8, 8, 3\]"):
        VisionTransformer(TINY).init(jax.random.PRNGKey(0), jnp.zeros((2, 8, 8, 3)))


# -- scan, remat, dropout, dtype -------------------------------------------------

def _scanned(params, num_layers):
    """Unscanned params -> the scanned layout (layers_i stacked on axis 0)."""
    out = {k: v for k, v in params.items() if not k.startswith("layers_")}
    out["layers"] = jax.tree.map(lambda *xs: jnp.stack(xs),
                                 *[params[f"layers_{i}"] for i in range(num_layers)])
    return out


def test_scanned_equals_unscanned():
    """Same params in both layouts (2 layers): same tokens, and the same
    gradients of sum(sin(tokens)) with the scanned stack rematerialized."""
    cfg = TINY.replace(num_layers=2)
    params, pixels = _init(cfg), _pixels(cfg)
    scan_cfg = cfg.replace(scan_layers=True, remat="full")
    stacked = _scanned(params, 2)
    assert jax.tree.map(np.shape, _init(scan_cfg)) == jax.tree.map(np.shape, stacked)
    np.testing.assert_allclose(_apply(cfg.replace(scan_layers=True), stacked, pixels),
                               _apply(cfg, params, pixels), atol=1e-6, rtol=0)

    @functools.partial(jax.jit, static_argnums=0)
    def grad(c, p):
        return jax.value_and_grad(lambda q: jnp.sum(jnp.sin(
                VisionTransformer(c).apply({"params": q}, pixels))))(p)
    (l0, g0), (l1, g1) = grad(cfg, params), grad(scan_cfg, stacked)
    np.testing.assert_allclose(l1, l0, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5),
                 g1, _scanned(g0, 2))


def test_dropout_only_when_not_deterministic():
    cfg = TINY.replace(dropout_rate=0.3)
    params, pixels = _init(cfg), _pixels(cfg)
    run = jax.jit(lambda det, rng: VisionTransformer(cfg).apply(
            {"params": params}, pixels, deterministic=det, rngs={"dropout": rng}),
        static_argnums=0)
    a, b = run(False, jax.random.PRNGKey(1)), run(False, jax.random.PRNGKey(2))
    np.testing.assert_allclose(run(True, jax.random.PRNGKey(1)),
                               _apply(cfg, params, pixels), atol=1e-5, rtol=0)
    np.testing.assert_array_equal(a, run(False, jax.random.PRNGKey(1)))
    assert float(jnp.max(jnp.abs(a - b))) > 0.1


def test_bfloat16_activations_track_float32():
    params, pixels = _init(TINY), _pixels(TINY)
    ref = _apply(TINY, params, pixels)
    out = _apply(TINY.replace(dtype="bfloat16"), params, pixels)
    assert out.dtype == jnp.float32
    assert float(jnp.max(jnp.abs(out - ref))) < 0.05
    assert float(jnp.mean(jnp.abs(out - ref))) < 0.01


# -- video ----------------------------------------------------------------------

def test_video_tokens_shapes_and_frame_order():
    """One [CLS] + 4 frames x 16 patches. Frames share the spatial position
    table: with the temporal embedding at 0, reordering the frames reorders
    their tokens and leaves [CLS] unchanged; the learned temporal embedding
    makes [CLS] depend on the order."""
    params = _init(VIDEO)
    shapes = jax.tree.map(np.shape, params)
    assert shapes["temporal_embedding"] == (4, 64)
    assert shapes["position_embedding"] == (17, 64)
    assert shapes["patch_embedding"] == {"kernel": (4, 4, 3, 64), "bias": (64,)}
    assert "temporal_embedding" not in _init(TINY)
    video = _pixels(VIDEO, batch=2)
    order = [2, 0, 3, 1]
    out = _apply(VIDEO, params, video)
    shuffled = _apply(VIDEO, params, video[:, order])
    assert out.shape == (2, VIDEO.num_tokens, 64) == (2, 65, 64)
    assert float(jnp.max(jnp.abs(out[:, 0] - shuffled[:, 0]))) > 1e-2

    static = dict(params, temporal_embedding=jnp.zeros((4, 64)))
    out = np.asarray(_apply(VIDEO, static, video))
    shuffled = np.asarray(_apply(VIDEO, static, video[:, order]))
    np.testing.assert_allclose(shuffled[:, 0], out[:, 0], atol=1e-5)
    frames = out[:, 1:].reshape(2, 4, 16, 64)
    np.testing.assert_allclose(shuffled[:, 1:].reshape(2, 4, 16, 64), frames[:, order],
                               atol=1e-5)


def test_identical_frames_share_the_spatial_positions():
    """A video of 4 identical frames, temporal embedding at 0: every frame's
    tokens are the same (one spatial position table for all frames)."""
    params = _init(VIDEO)
    static = dict(params, temporal_embedding=jnp.zeros((4, 64)))
    image = _pixels(TINY, batch=1)
    video = np.repeat(image[:, None], 4, axis=1)
    out = np.asarray(_apply(VIDEO, static, video))[0, 1:].reshape(4, 16, 64)
    for t in range(1, 4):
        np.testing.assert_allclose(out[t], out[0], atol=1e-5)


# -- config and partitioning ------------------------------------------------------

def test_config_properties_round_trip_and_errors():
    assert TINY.pixel_shape == (16, 16, 3) and TINY.num_tokens == 17
    assert VIDEO.pixel_shape == (4, 16, 16, 3) and VIDEO.num_tokens == 1 + 4 * 16
    assert TINY.replace(patch_size=2).num_tokens == 65
    assert ViTConfig.from_dict(VIDEO.to_dict()) == VIDEO
    assert get_vit_config("vit_tiny_video", patch_size=8) == VIDEO.replace(patch_size=8)
    assert get_vit_config() == TINY
    for call, message in [
            (lambda: get_vit_config("vit_huge"), "unknown ViT config 'vit_huge'"),
            (lambda: get_vit_config(patch=2), r"unknown ViTConfig fields \['patch'\]"),
            (lambda: ViTConfig.from_dict({"frames": 4}), r"unknown ViTConfig fields"),
            (lambda: TINY.replace(patch_size=5), "image_size=16 is not a multiple of patch"),
            (lambda: TINY.replace(num_heads=3), "hidden_size=64 is not a multiple"),
            (lambda: TINY.replace(remat="some"), "ViTConfig.remat='some'"),
            (lambda: TINY.replace(dtype="float16"), "ViTConfig.dtype='float16'"),
            (lambda: TINY.replace(num_frames=0), "ViTConfig.num_frames=0")]:
        with pytest.raises(T5mtlError, match=message):
            call()


def test_every_param_has_logical_axes_that_shard():
    from t5mtl.train.partitioning import DEFAULT_LOGICAL_AXIS_RULES
    boxed = jax.eval_shape(lambda: VisionTransformer(VIDEO.replace(scan_layers=True)).init(
            jax.random.PRNGKey(0), jnp.zeros((1,) + VIDEO.pixel_shape)))["params"]
    leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert leaves and all(isinstance(x, nn.Partitioned) for x in leaves)
    assert all(len(x.names) == len(x.value.shape) for x in leaves)
    specs = nn.get_partition_spec(boxed)
    mesh_spec = lambda spec: nn.logical_to_mesh_axes(spec, DEFAULT_LOGICAL_AXIS_RULES)
    layer = specs["layers"]
    assert tuple(mesh_spec(layer["mlp"]["wi"]["kernel"])) == (None, "fsdp", "model")
    assert tuple(mesh_spec(layer["attention"]["query"]["kernel"])) == (None, "fsdp", "model",
                                                                       None)
    assert tuple(mesh_spec(layer["attention"]["out"]["kernel"])) == (None, "model", None, "fsdp")
    assert tuple(mesh_spec(specs["patch_embedding"]["kernel"])) == (None, None, None, "fsdp")
    assert tuple(mesh_spec(specs["temporal_embedding"])) == (None, "fsdp")
