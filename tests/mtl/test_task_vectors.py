"""Task arithmetic (t5mtl/mtl/task_vectors.py): exact arithmetic on hand-made
params, the paper's rules for the scale, refusals, written model_dirs that
load, and the command. The end-to-end check on trained models is in
test_task_vectors_e2e.py."""
import json

import jax
import ml_dtypes
import numpy as np
import pytest

import t5mtl
from t5mtl import cli
from t5mtl.errors import T5mtlError
from t5mtl.models import get_config, param_names
from t5mtl.models.encoder_decoder import EncoderDecoderModel
from t5mtl.mtl import task_vectors as tv
from t5mtl.train import model_dir

F32 = np.float32


def _loaded(params, path="base"):
    return tv.LoadedModel(path, None, {k: np.asarray(v) for k, v in params.items()})


def _vector(base, finetuned, path="ft"):
    return tv.TaskVector(path, base, {k: np.asarray(v) for k, v in finetuned.items()})


BASE = {"a/kernel": np.array([1.0, 2.0, -3.0], F32), "b/scale": np.array([[0.5, -1.0]], F32)}
FT1 = {"a/kernel": np.array([1.5, 2.0, -2.0], F32), "b/scale": np.array([[0.25, -1.0]], F32)}
FT2 = {"a/kernel": np.array([0.0, 2.5, -3.0], F32), "b/scale": np.array([[0.5, 0.0]], F32)}


def test_vector_negation_and_sum_on_hand_made_params():
    base = _loaded(BASE)
    v1, v2 = _vector(base, FT1, "ft1"), _vector(base, FT2, "ft2")
    np.testing.assert_array_equal(v1.delta("a/kernel"), [0.5, 0.0, 1.0])
    np.testing.assert_array_equal(v1.delta("b/scale"), [[-0.25, 0.0]])
    assert v1.norm() == pytest.approx(np.sqrt(0.25 + 1.0 + 0.0625))
    # base - 1 * tau1: the step away from the finetune, as far as it went.
    neg = tv.apply(base, [(-1.0, v1)])
    np.testing.assert_array_equal(neg["a/kernel"], [0.5, 2.0, -4.0])
    np.testing.assert_array_equal(neg["b/scale"], [[0.75, -1.0]])
    assert neg["a/kernel"].dtype == np.float32
    # base + 0.5 (tau1 + tau2): tau2 = [-1, 0.5, 0], [[0, 1]].
    both = tv.apply(base, [(0.5, v1), (0.5, v2)])
    np.testing.assert_array_equal(both["a/kernel"], [0.75, 2.25, -2.5])
    np.testing.assert_array_equal(both["b/scale"], [[0.375, -0.5]])
    # No terms: the base itself; `only` restricts the edit to matching names.
    np.testing.assert_array_equal(tv.apply(base, [])["a/kernel"], BASE["a/kernel"])
    only = tv.apply(base, [(1.0, v1)], only=["b/.*"])
    np.testing.assert_array_equal(only["a/kernel"], BASE["a/kernel"])
    np.testing.assert_array_equal(only["b/scale"], FT1["b/scale"])
    with pytest.raises(T5mtlError, match="--only pattern 'c/.*' matches no parameter"):
        tv.apply(base, [(1.0, v1)], only=["c/.*"])


def test_base_plus_its_vector_is_the_finetune_bit_for_bit():
    rng = np.random.default_rng(0)
    base, ft = {}, {}
    for i, scale in enumerate([1e-3, 0.02, 1.0, 30.0]):
        w = (rng.normal(size=(64, 32)) * scale).astype(F32)
        base[f"w{i}"], ft[f"w{i}"] = w, (w + rng.normal(size=w.shape) * scale * 0.05).astype(F32)
    base["zero"], ft["zero"] = np.zeros(8, F32), rng.normal(size=8).astype(F32)
    base["bf16"] = rng.normal(size=16).astype(ml_dtypes.bfloat16)
    ft["bf16"] = (base["bf16"].astype(F32) + 0.01).astype(ml_dtypes.bfloat16)
    loaded = _loaded(base)
    out = tv.apply(loaded, [(1.0, _vector(loaded, ft))])
    for name in base:
        assert out[name].dtype == base[name].dtype
        assert out[name].tobytes() == ft[name].tobytes(), name
    # Plain float32 arithmetic would not be exact on these leaves.
    assert any(((ft[n] - base[n]) + base[n]).tobytes() != ft[n].tobytes()
               for n in ("w0", "w1", "w2", "w3"))


def test_a_vector_of_another_base_is_refused():
    base, other = _loaded(BASE, "b1"), _loaded(FT2, "b2")
    with pytest.raises(T5mtlError, match="ft: its task vector was taken against b2, not "
                                         "against the base b1"):
        tv.apply(base, [(1.0, _vector(other, FT1))])


def test_the_papers_rules_for_the_scale():
    grid = {0.0: {"A": 80.0, "C": 90.0}, 0.5: {"A": 40.0, "C": 88.0},
            1.0: {"A": 10.0, "C": 84.0}, 1.5: {"A": 0.0, "C": 60.0}}
    # Lowest A while C keeps 95% of 90 = 85.5: 1.0 and 1.5 fall below it.
    assert tv.negation_scale(grid, "A", "C") == 0.5
    assert tv.negation_scale(grid, "A", "C", keep=0.9) == 1.0
    assert tv.negation_scale({0.0: {"A": 5.0, "C": 1.0}, 1.0: {"A": 5.0, "C": 1.0}},
                             "A", "C") == 0.0           # a tie goes to the smaller edit
    with pytest.raises(T5mtlError, match="scale 0"):
        tv.negation_scale({1.0: {"A": 0.0, "C": 1.0}}, "A", "C")
    finetuned = {"A": 80.0, "B": 50.0}
    add = {0.0: {"A": 40.0, "B": 10.0},     # 0.5 * (0.5 + 0.2) = 0.35
           0.5: {"A": 60.0, "B": 40.0},     # 0.5 * (0.75 + 0.8) = 0.775
           1.0: {"A": 80.0, "B": 20.0}}     # 0.5 * (1.0 + 0.4) = 0.7
    assert tv.normalized_accuracy(add[0.5], finetuned) == pytest.approx(0.775)
    assert tv.addition_scale(add, finetuned) == 0.5


# -- real model directories, written without training -----------------------------------

def _init(config, seed):
    model = EncoderDecoderModel(config)
    return model, jax.tree.map(np.asarray, model.init_params(jax.random.PRNGKey(seed)))


def _write(path, model, params, base=None):
    model_dir.save_params(str(path), params, step=0)
    model_dir.write_model_json(str(path), model, {"kind": "byte", "extra_ids": 100},
                               ["synth_parity"], base)
    return str(path)


def _nudged(params, seed, size=0.01):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda x: (x + size * rng.normal(size=x.shape) * np.std(x)).astype(
        x.dtype), params)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tv")
    model, params = _init(get_config("t5_tiny"), 0)
    out = {"model": model, "params": params,
           "base": _write(root / "base", model, params),
           "ft1": _write(root / "ft1", model, _nudged(params, 1)),
           "ft2": _write(root / "ft2", model, _nudged(params, 2))}
    scanned = EncoderDecoderModel(get_config("t5_tiny", scan_layers=True))
    out["scanned"] = _write(root / "scanned", scanned,
                            scanned.adapt_params(_nudged(params, 3)))
    wide, wide_params = _init(get_config("t5_tiny", d_ff=96), 0)
    out["wide"] = _write(root / "wide", wide, wide_params)
    _, other = _init(get_config("t5_tiny"), 7)
    out["other_base"] = _write(root / "other_base", model, other)
    out["root"] = root
    return out


def test_vectors_of_model_dirs_any_layout(dirs):
    base = tv.load_model(dirs["base"])
    v1, scanned = tv.task_vector(base, dirs["ft1"]), tv.task_vector(base, dirs["scanned"])
    flat = param_names.flatten(dirs["params"])
    want = param_names.flatten(_nudged(dirs["params"], 3))
    out = tv.apply(base, [(1.0, scanned)])         # per-layer base, scanned finetune
    assert out.keys() == flat.keys()
    for name in flat:
        assert out[name].tobytes() == want[name].tobytes(), name
    assert 0.005 < v1.norm() / tv._norm(base.params) < 0.02


def test_refusals_name_both_paths(dirs):
    base = tv.load_model(dirs["base"])
    with pytest.raises(T5mtlError, match=rf"{dirs['wide']} is not a finetune of the base "
                                         rf"{dirs['base']}'s architecture: d_ff is 96 there "
                                         rf"but 128 in the base"):
        tv.task_vector(base, dirs["wide"])
    with pytest.raises(T5mtlError, match=rf"{dirs['other_base']} does not look finetuned "
                                         rf"from {dirs['base']}: its parameters are 1\.\d\d x"):
        tv.task_vector(base, dirs["other_base"])
    with pytest.raises(T5mtlError, match="no model.json"):
        tv.task_vector(base, str(dirs["root"]))


def test_adapter_dirs_expand_and_check_their_base(dirs, tmp_path):
    from t5mtl.peft import LoRA
    base = tv.load_model(dirs["base"])
    lora = EncoderDecoderModel(get_config("t5_tiny"), weight_adapter=LoRA(rank=2))
    full = lora.adapt_params({**dirs["params"], **_init_lora(lora)})
    ref = {"path": dirs["base"], "step": 0,
           "fingerprint": model_dir.params_fingerprint(dirs["params"])}
    adapter = _write(tmp_path / "lora", lora, {"lora": full["lora"]}, ref)
    vector = tv.task_vector(base, adapter)
    merged = param_names.flatten(jax.tree.map(np.asarray, lora.weights(full)))
    changed = {n for n in merged if vector.delta(n).any()}
    assert changed and all("/query/" in n or "/value/" in n for n in changed), changed
    out = tv.apply(base, [(1.0, vector)])
    for name in merged:
        assert out[name].tobytes() == merged[name].tobytes(), name
    # The same adapter recorded against another base: refused by fingerprint.
    other = t5mtl.load(dirs["other_base"]).params
    bad_ref = dict(ref, path=dirs["other_base"],
                   fingerprint=model_dir.params_fingerprint(other))
    wrong = _write(tmp_path / "lora_other", lora, {"lora": full["lora"]}, bad_ref)
    with pytest.raises(T5mtlError, match=rf"{wrong} is an adapter of the base "
                                         rf"{dirs['other_base']} .*not of {dirs['base']}"):
        tv.task_vector(base, wrong)


def _init_lora(lora):
    """LoRA factors with B nonzero (at init B is 0 and the delta would vanish)."""
    boxed = __import__("flax").linen.unbox(lora.init_boxed(jax.random.PRNGKey(0)))
    return {"lora": jax.tree.map(lambda x: np.asarray(x) + 0.05, boxed["lora"])}


def test_the_command_writes_a_model_dir_that_loads(dirs, tmp_path, capsys):
    out = str(tmp_path / "edited")
    status = cli.main(["task-vector", "--base", dirs["base"], "--add", dirs["ft1"],
                       "--add", dirs["ft2"], "--negate", dirs["scanned"], "--scale", "0.5",
                       "--out", out])
    assert status == 0, capsys.readouterr().err
    base = tv.load_model(dirs["base"])
    vs = [tv.task_vector(base, dirs[k]) for k in ("ft1", "ft2", "scanned")]
    want = tv.apply(base, [(0.5, vs[0]), (0.5, vs[1]), (-0.5, vs[2])])
    got = param_names.flatten(t5mtl.load(out).params)
    assert got.keys() == want.keys()
    for name in want:
        assert got[name].tobytes() == want[name].tobytes(), name
    recipe = json.load(open(f"{out}/task_vector.json"))
    assert [(v["path"], v["scale"]) for v in recipe["vectors"]] == \
        [(dirs["ft1"], 0.5), (dirs["ft2"], 0.5), (dirs["scanned"], -0.5)]
    assert t5mtl.load(out).tasks == ["synth_parity"]
    # A second run into the same directory is refused; errors are one line, exit 2.
    assert cli.main(["task-vector", "--base", dirs["base"], "--add", dirs["ft1"],
                     "--out", out]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert cli.main(["task-vector", "--base", dirs["base"], "--add", dirs["wide"],
                     "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{dirs['wide']} is not a finetune of the base" in err
    assert not (tmp_path / "x").exists()
    assert cli.main(["task-vector", "--base", dirs["base"], "--out", str(tmp_path / "y")]) == 2
    assert "nothing to apply" in capsys.readouterr().err
    for argv, message in [
            (["--add", dirs["ft1"], "--target_task", "t"], "give --scales"),
            (["--negate", dirs["ft1"], "--scales", "0.5,1"], "needs --target_task and "
                                                              "--control_task"),
            (["--add", dirs["ft1"], "--scales", "0.5"], "one --validation_task per --add"),
            (["--add", dirs["ft1"], "--negate", dirs["ft2"], "--scales", "1"], "give --scale"),
            (["--add", dirs["ft1"], "--scales", "a,b"], "want numbers")]:
        assert cli.main(["task-vector", "--base", dirs["base"], *argv, "--out",
                         str(tmp_path / "z")]) == 2, argv
        assert message in capsys.readouterr().err, argv
    assert not (tmp_path / "z").exists()
