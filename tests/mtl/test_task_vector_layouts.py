"""Task vectors across the scanned (`layers`, leaves stacked) and per-layer
(`layers_i`) layouts: a base and its finetunes may be saved in either, the
arithmetic is the same, the output is written in the base's layout, and
`--only` selects the same leaves whichever layout the base has."""
import json

import numpy as np
import pytest

import t5mtl
from t5mtl import cli
from t5mtl.errors import T5mtlError
from t5mtl.models import get_config, param_names
from t5mtl.models.encoder_decoder import EncoderDecoderModel
from t5mtl.mtl import task_vectors as tv
from t5mtl.train import model_dir
from tests.mtl.test_task_vectors import _init, _init_lora, _nudged, _write


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tv_layouts")
    flat_model, params = _init(get_config("t5_tiny"), 0)
    scan_model = EncoderDecoderModel(get_config("t5_tiny", scan_layers=True))
    ft1, ft2 = _nudged(params, 1), _nudged(params, 2)
    return {
        "params": params, "ft1": ft1, "ft2": ft2, "root": root,
        "flat_model": flat_model, "scan_model": scan_model,
        "base_flat": _write(root / "base_flat", flat_model, params),
        "base_scan": _write(root / "base_scan", scan_model, scan_model.adapt_params(params)),
        "ft1_flat": _write(root / "ft1_flat", flat_model, ft1),
        "ft1_scan": _write(root / "ft1_scan", scan_model, scan_model.adapt_params(ft1)),
        "ft2_flat": _write(root / "ft2_flat", flat_model, ft2),
        "ft2_scan": _write(root / "ft2_scan", scan_model, scan_model.adapt_params(ft2))}


def _f64(tree):
    return {k: np.asarray(v, np.float64) for k, v in param_names.flatten(tree).items()}


def _want(dirs, scale1, scale2):
    """base + scale1 tau1 + scale2 tau2 by numpy in float64, per-layer names."""
    base, ft1, ft2 = _f64(dirs["params"]), _f64(dirs["ft1"]), _f64(dirs["ft2"])
    return {n: (base[n] + scale1 * (ft1[n] - base[n]) + scale2 * (ft2[n] - base[n]))
            .astype(np.float32) for n in base}


@pytest.mark.parametrize("base_key,ft1_key,ft2_key", [
    ("base_scan", "ft1_flat", "ft2_scan"),      # scanned base, a per-layer finetune
    ("base_flat", "ft1_scan", "ft2_flat"),      # per-layer base, a scanned finetune
    ("base_scan", "ft1_scan", "ft2_flat")])
def test_the_command_mixes_layouts_and_writes_the_bases(dirs, tmp_path, base_key, ft1_key,
                                                        ft2_key):
    out = str(tmp_path / "edited")
    assert cli.main(["task-vector", "--base", dirs[base_key], "--add", dirs[ft1_key],
                     "--negate", dirs[ft2_key], "--scale", "0.5", "--out", out]) == 0
    scanned = base_key == "base_scan"
    assert json.load(open(f"{out}/model.json"))["model"]["spec"]["config"]["scan_layers"] is scanned
    saved = param_names.flatten(model_dir.saved_params(out))
    layer_names = {n.split("/")[1] for n in saved if n.startswith("encoder/layers")}
    assert layer_names == ({"layers"} if scanned else {"layers_0", "layers_1"})
    got = param_names.flatten(dirs["flat_model"].adapt_params(t5mtl.load(out).params))
    want = _want(dirs, 0.5, -0.5)
    assert got.keys() == want.keys()
    for name in want:
        assert got[name].tobytes() == want[name].tobytes(), name


def test_only_selects_the_same_leaves_in_either_layout(dirs, tmp_path):
    """A per-layer name selects that layer of a scanned base's stacked leaf,
    a scanned name (`encoder/layers/...`) every layer of a per-layer base."""
    base_f64, ft1 = _f64(dirs["params"]), _f64(dirs["ft1"])
    cases = [("encoder/layers_1/.*", lambda n: n.startswith("encoder/layers_1/")),
             ("decoder/layers/mlp/.*", lambda n: n.startswith("decoder/layers_") and "/mlp/" in n)]
    for i, (only, edited) in enumerate(cases):
        want = {n: (ft1[n] if edited(n) else base_f64[n]).astype(np.float32)
                for n in base_f64}
        assert any(edited(n) for n in want) and not all(edited(n) for n in want)
        for base_key, ft_key in [("base_scan", "ft1_flat"), ("base_flat", "ft1_scan")]:
            out = str(tmp_path / f"{base_key}_{i}")
            assert cli.main(["task-vector", "--base", dirs[base_key], "--add", dirs[ft_key],
                             "--only", only, "--out", out]) == 0, (only, base_key)
            got = param_names.flatten(dirs["flat_model"].adapt_params(t5mtl.load(out).params))
            for name in want:
                assert got[name].tobytes() == want[name].tobytes(), (only, base_key, name)
    base = tv.load_model(dirs["base_scan"])
    with pytest.raises(T5mtlError, match=r"--only pattern 'encoder/layers_2/\.\*' matches "
                                         r"no parameter"):
        tv.apply(base, [(1.0, tv.task_vector(base, dirs["ft1_flat"]))],
                 only=["encoder/layers_2/.*"])


def test_a_per_layer_lora_adapter_of_a_scanned_base(dirs, tmp_path):
    """The adapter's recorded fingerprint is of the base in the adapter's
    layout; its merged delta lands in the scanned base's stacked leaves."""
    from t5mtl.peft import LoRA
    lora = EncoderDecoderModel(get_config("t5_tiny"), weight_adapter=LoRA(rank=2))
    full = lora.adapt_params({**dirs["params"], **_init_lora(lora)})
    ref = {"path": dirs["base_scan"], "step": 0,
           "fingerprint": model_dir.params_fingerprint(dirs["params"])}
    adapter = _write(tmp_path / "lora", lora, {"lora": full["lora"]}, ref)
    out = str(tmp_path / "edited")
    assert cli.main(["task-vector", "--base", dirs["base_scan"], "--add", adapter,
                     "--scale", "2", "--out", out]) == 0
    merged = _f64(lora.weights(full))
    base = _f64(dirs["params"])
    got = param_names.flatten(dirs["flat_model"].adapt_params(t5mtl.load(out).params))
    changed = set()
    for name in base:
        want = (base[name] + 2.0 * (merged[name] - base[name])).astype(np.float32)
        assert got[name].tobytes() == want.tobytes(), name
        if merged[name].tobytes() != base[name].tobytes():
            changed.add(name)
    assert changed and all("/query/" in n or "/value/" in n for n in changed), changed
