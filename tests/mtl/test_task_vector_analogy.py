"""Task analogies (A - B + C): base + lambda (tau_A - tau_B + tau_C), exact
in float64 against numpy, the rule that picks lambda on the target task,
the command's `--analogy` and its refusals."""
import json

import gin
import numpy as np
import pytest

import t5mtl
from t5mtl import cli
from t5mtl.errors import T5mtlError
from t5mtl.models import get_config, param_names
from t5mtl.models.encoder_decoder import EncoderDecoderModel
from t5mtl.mtl import task_vectors as tv
from tests.mtl.test_task_vectors import BASE, F32, FT1, FT2, _init, _loaded, _nudged, \
    _vector, _write

FT3 = {"a/kernel": np.array([1.0, 1.0, -3.5], F32), "b/scale": np.array([[0.5, -1.25]], F32)}


def test_analogy_on_hand_made_params():
    base = _loaded(BASE)
    va, vb, vc = _vector(base, FT1, "A"), _vector(base, FT2, "B"), _vector(base, FT3, "C")
    # tau_A = [0.5, 0, 1], [[-0.25, 0]]; tau_B = [-1, 0.5, 0], [[0, 1]];
    # tau_C = [0, -1, -0.5], [[0, -0.25]]; A - B + C = [1.5, -1.5, 0.5], [[-0.25, -1.25]].
    terms = tv.analogy(0.5, va, vb, vc)
    assert [(s, v.path) for s, v in terms] == [(0.5, "A"), (-0.5, "B"), (0.5, "C")]
    out = tv.apply(base, terms)
    np.testing.assert_array_equal(out["a/kernel"], [1.75, 1.25, -2.75])
    np.testing.assert_array_equal(out["b/scale"], [[0.375, -1.625]])
    assert out["a/kernel"].dtype == np.float32
    recipe = tv.recipe(base, terms, analogy_of=[va, vb, vc])
    assert recipe["analogy"]["form"] == "base + scale * (tau_A - tau_B + tau_C)"
    assert [recipe["analogy"][k].rsplit("/", 1)[-1] for k in "ABC"] == ["A", "B", "C"]
    assert tv.recipe(base, terms)["analogy"] is None


def test_the_rule_for_an_analogys_scale():
    grid = {0.0: {"T": 10.0, "C": 90.0}, 0.5: {"T": 40.0, "C": 88.0},
            1.0: {"T": 60.0, "C": 80.0}, 1.5: {"T": 60.0, "C": 50.0}}
    assert tv.analogy_scale(grid, "T") == 1.0            # 1.0 and 1.5 tie: the smaller
    assert tv.analogy_scale(grid, "T", "C") == 0.5       # 80 < 0.95 x 90 = 85.5
    assert tv.analogy_scale(grid, "T", "C", keep=0.85) == 1.0
    with pytest.raises(T5mtlError, match=r"scale 0"):
        tv.analogy_scale({1.0: grid[1.0]}, "T", "C")
    # scale_grid with one sign per vector evaluates base + s (tau_A - tau_B + tau_C).
    base = tv.LoadedModel("base", _AsIs(), _loaded(BASE).params)
    vs = [_vector(base, FT1), _vector(base, FT2), _vector(base, FT3)]
    seen = tv.scale_grid(base, vs, (1, -1, 1), [0.5, 1.0],
                         lambda p: {"a0": float(p["a"]["kernel"][0]),
                                    "b1": float(p["b"]["scale"][0, 1])})
    assert seen == {0.0: {"a0": 1.0, "b1": -1.0}, 0.5: {"a0": 1.75, "b1": -1.625},
                    1.0: {"a0": 2.5, "b1": -2.25}}
    with pytest.raises(T5mtlError, match="2 signs for 3 vectors"):
        tv.scale_grid(base, vs, (1, -1), [1.0], lambda p: {})


class _AsIs:
    """A model stand-in whose params need no layout change."""
    @staticmethod
    def adapt_params(params):
        return params


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tv_analogy")
    model, params = _init(get_config("t5_tiny"), 0)
    scanned = EncoderDecoderModel(get_config("t5_tiny", scan_layers=True))
    fts = {k: _nudged(params, seed) for k, seed in (("A", 1), ("B", 2), ("C", 3))}
    return {"root": root, "model": model, "params": params, "fts": fts,
            "base": _write(root / "base", model, params),
            "A": _write(root / "A", model, fts["A"]),
            "B": _write(root / "B", scanned, scanned.adapt_params(fts["B"])),   # either layout
            "C": _write(root / "C", model, fts["C"])}


def _numpy_analogy(dirs, scale):
    """base + s tau_A - s tau_B + s tau_C, in float64, left to right, rounded once."""
    flat = {k: {n: np.asarray(v, np.float64) for n, v in param_names.flatten(p).items()}
            for k, p in [("base", dirs["params"]), *dirs["fts"].items()]}
    base = flat["base"]
    return {n: (base[n] + scale * (flat["A"][n] - base[n]) - scale * (flat["B"][n] - base[n])
                + scale * (flat["C"][n] - base[n])).astype(np.float32) for n in base}


def test_the_command_writes_the_analogy(dirs, tmp_path):
    out = str(tmp_path / "analogy")
    assert cli.main(["task-vector", "--base", dirs["base"], "--analogy",
                     f"{dirs['A']},{dirs['B']},{dirs['C']}", "--scale", "0.7",
                     "--out", out]) == 0
    want = _numpy_analogy(dirs, 0.7)
    got = param_names.flatten(t5mtl.load(out).params)
    assert got.keys() == want.keys()
    for name in want:
        assert got[name].tobytes() == want[name].tobytes(), name
    moved = np.abs(got["token_embedder/embedding"].astype(np.float64)
                   - np.asarray(dirs["params"]["token_embedder"]["embedding"])).max()
    assert moved > 1e-4
    recipe = json.load(open(f"{out}/task_vector.json"))
    assert recipe["analogy"] == {"form": "base + scale * (tau_A - tau_B + tau_C)",
                                 "A": dirs["A"], "B": dirs["B"], "C": dirs["C"]}
    assert [(v["path"], v["scale"]) for v in recipe["vectors"]] == \
        [(dirs["A"], 0.7), (dirs["B"], -0.7), (dirs["C"], 0.7)]


def test_the_command_chooses_the_analogys_scale_on_the_target(dirs, tmp_path, monkeypatch,
                                                               capsys):
    """task_scores stands in for evaluation: the target scores best at 0.75
    (its distance from base + 0.75 (tau_A - tau_B + tau_C)), the control
    falls 10 points per unit of scale, so keeping 95% allows scales <= 0.5."""
    emb = "token_embedder/embedding"
    base_emb = np.asarray(dirs["params"]["token_embedder"]["embedding"], np.float64)
    goal = _numpy_analogy(dirs, 0.75)[emb].astype(np.float64)
    unit = np.linalg.norm(_numpy_analogy(dirs, 1.0)[emb].astype(np.float64) - base_emb)

    def fake_scores(model, params, tasks, lengths, split, num_examples=None, batch_size=64):
        e = np.asarray(param_names.flatten(params)[emb], np.float64)
        scores = {"target": 100.0 - np.linalg.norm(e - goal) / unit,
                  "control": 100.0 - 10.0 * np.linalg.norm(e - base_emb) / unit}
        return {t: float(scores[t]) for t in tasks}
    monkeypatch.setattr(tv, "task_scores", fake_scores)
    analogy = f"{dirs['A']},{dirs['B']},{dirs['C']}"
    for extra, chosen in [([], 0.75), (["--control_task", "control"], 0.5)]:
        gin.clear_config()          # one command per process, as from the shell
        out = str(tmp_path / f"chosen_{chosen}")
        assert cli.main(["task-vector", "--base", dirs["base"], "--analogy", analogy,
                         "--scales", "0.25,0.5,0.75,1", "--target_task", "target", *extra,
                         "--out", out]) == 0, capsys.readouterr().err
        recipe = json.load(open(f"{out}/task_vector.json"))
        assert recipe["scale_selection"]["chosen"] == chosen, recipe["scale_selection"]
        assert recipe["scale_selection"]["scales"] == [0.0, 0.25, 0.5, 0.75, 1.0]
        assert [v["scale"] for v in recipe["vectors"]] == [chosen, -chosen, chosen]
        got = param_names.flatten(t5mtl.load(out).params)
        assert got[emb].tobytes() == _numpy_analogy(dirs, chosen)[emb].tobytes()
    assert "<- chosen" in capsys.readouterr().out


def test_bad_analogies_are_refused_in_one_line(dirs, tmp_path, capsys):
    a, b, c = dirs["A"], dirs["B"], dirs["C"]
    out = str(tmp_path / "x")
    for argv, message in [
            (["--analogy", f"{a},{b}"], f"--analogy '{a},{b}': want three model_dirs"),
            (["--analogy", f"{a},,{c}"], "want three model_dirs"),
            (["--analogy", f"{a},{b},{c}", "--add", a], "give it without --add/--negate"),
            (["--analogy", f"{a},{b},{b}/"], f"{b} is both subtracted and added"),
            (["--analogy", f"{a},{b},{c}", "--scales", "0.5,1"], "needs --target_task"),
            (["--analogy", f"{a},{b},{c}", "--scales", "1", "--target_task", "t",
              "--validation_task", "t"], "not --validation_task"),
            (["--analogy", f"{a},{b},{dirs['root']}"], "no model.json")]:
        assert cli.main(["task-vector", "--base", dirs["base"], *argv, "--out", out]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert message in err and err.count("\n") == 0, (argv, err)
    assert not (tmp_path / "x").exists()
