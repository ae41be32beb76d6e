"""LAVENDER evaluation (t5mtl.infer.lavender_eval): answers and retrieval
scores against the model's full logits, recall with repeated captions and
its chance by hand, caption token F1 / BLEU by hand; and gin/runs/lavender.gin
trained a few steps through the trainer, its model_dir evaluated."""
import os

import gin
import jax
import numpy as np
import pytest

from t5mtl.data.lavender_features import CLS, MASK, SEP
from t5mtl.errors import T5mtlError
from t5mtl.infer import lavender_eval as le
from t5mtl.models import get_config
from t5mtl.models.lavender import Lavender
from t5mtl.models.vit import get_vit_config
from tests.models.test_lavender import _log_softmax

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VIT = get_vit_config("vit_tiny_video", patch_size=8, hidden_size=16, num_heads=2, mlp_dim=32,
                     num_layers=1)


def small_model():
    return Lavender(get_config("t5_tiny", vocab_size=64, num_layers=1), VIT)


def random_params(model, seed=0, scale=0.5):
    rng = np.random.RandomState(seed)
    return jax.tree.map(lambda s: (scale * rng.standard_normal(s.shape)).astype(np.float32),
                        model.abstract_params())


def videos(n, seed=0):
    return np.random.RandomState(seed).uniform(0, 1, (n,) + VIT.pixel_shape).astype(np.float32)


def test_answers_and_retrieval_scores_equal_the_full_logits():
    model = small_model()
    params = random_params(model)
    vids = videos(3)
    questions = [[9, 10], [11], [12, 13, 14]]
    # batch 2: the last batch is padded; every row as the model's logits give it
    got = le.answer_log_probs(model, params, vids, questions, 8, batch_size=2)
    rows = le.answer_rows(questions, 8)
    np.testing.assert_array_equal(rows["encoder_input_tokens"][1], [CLS, 11, SEP, MASK, 0, 0,
                                                                    0, 0])
    full = _log_softmax(np.asarray(jax.jit(model.logits)(params, {**rows, "video": vids}),
                                   np.float64))
    mask_at = [4, 3, 5]
    np.testing.assert_allclose(got, full[np.arange(3), mask_at], atol=2e-5)
    acc, pred = le.qa_accuracy(model, params, vids, questions,
                               [int(full[0, 4].argmax()), 7, 7], 8, batch_size=2)
    np.testing.assert_array_equal(pred, full[np.arange(3), mask_at].argmax(-1))
    assert acc == pytest.approx(100 * np.mean(pred == [int(full[0, 4].argmax()), 7, 7]))
    matrix = le.retrieval_matrix(model, params, vids[:2], questions, 8, true_id=20,
                                 false_id=21, batch_size=4)
    assert matrix.shape == (3, 2)
    pairs = le.answer_log_probs(model, params, vids[[0, 1, 0, 1, 0, 1]],
                                [q for q in questions for _ in range(2)], 8, batch_size=2)
    np.testing.assert_allclose(matrix.ravel(), pairs[:, 20] - pairs[:, 21], atol=2e-5)


def test_recall_with_repeated_captions_and_its_chance():
    captions = ["a red square", "a blue cross", "a red square", "a green circle"]
    # scores [captions, videos]; caption 0 and 2 are the same string: videos 0 and 2 both count
    scores = np.array([[0.0, 1.0, 0.5, 0.0],     # best relevant (video 2) ranked 2nd
                       [0.0, 0.9, 0.0, 0.0],     # video 1 first
                       [0.3, 0.0, 0.1, 0.2],     # video 0 first
                       [0.0, 0.0, 0.0, 0.0]])    # all tied: counted against the query
    out = le.retrieval_recall(scores, captions, ks=(1, 2))
    assert out["t2v_R@1"] == pytest.approx(50.0)
    assert out["t2v_R@2"] == pytest.approx(75.0)
    # chance: 2 of 4 relevant for captions 0, 2 (R@1 1/2, R@2 1 - C(2,2)/C(4,2) = 5/6);
    # 1 of 4 for 1, 3 (R@1 1/4, R@2 1/2)
    assert out["t2v_R@1_chance"] == pytest.approx(100 * (0.5 + 0.25) / 2)
    assert out["t2v_R@2_chance"] == pytest.approx(100 * (5 / 6 + 0.5) / 2)
    # video -> text reads the transpose: video 0 ranks its captions (0, 2) by column 0
    assert out["v2t_R@1"] == pytest.approx(100 * np.mean([1, 1, 0, 0]))
    with pytest.raises(T5mtlError, match="caption i must be video i's"):
        le.retrieval_recall(scores[:3], captions)


def test_caption_scores_by_hand():
    refs = ["a red square moves left", "a blue 3 moves up"]
    preds = ["a blue square moves left", "a blue 3 moves up"]
    out = le.caption_scores(refs, preds)
    # articles dropped: (red|blue) square moves left -> 3 of 4 words shared; the second exact
    assert out["token_f1"] == pytest.approx(100 * (0.75 + 1.0) / 2)
    assert le.caption_scores(refs, refs)["bleu"] == pytest.approx(100.0)
    assert 0 < out["bleu"] < 100
    assert le.majority_answers(["q1", "q1", "q2", "q1"], ["x", "y", "z", "y"]) == \
        {"q1": "y", "q2": "z"}


def test_lavender_gin_trains_through_the_trainer_and_its_model_dir_evaluates(tmp_path):
    from t5mtl import gin_config
    from t5mtl.data import vision_tasks as vt
    from t5mtl.data.vocab import get_vocabulary
    from t5mtl.train.model_dir import load_params
    from t5mtl.train.trainer import train
    gin.clear_config()
    try:
        gin_config.parse([os.path.join(ROOT, "gin/runs/lavender.gin")], [
            "train.num_steps = 3", "DataConfig.batch_size = 4", "train.log_period = 1",
            "get_vit_config.hidden_size = 16", "get_vit_config.num_heads = 2",
            "get_vit_config.num_layers = 1", "get_config.num_layers = 1",
            "learning_rate_schedule.warmup_steps = 1", "learning_rate_schedule.decay_steps = 3"])
        summary = train(str(tmp_path / "run"))
    finally:
        gin.clear_config()
    assert summary["step"] == 3 and np.isfinite(summary["loss"])
    model, params = load_params(str(tmp_path / "run"))
    assert isinstance(model, Lavender) and model.vit_config.patch_size == 8
    vids, _, texts = vt.task_arrays("lavender_qa", "validation")
    vocab = get_vocabulary("wordpiece_en")
    q = [list(vocab.encode(t[0])) for t in texts[:3]]
    acc, pred = le.qa_accuracy(model, params, vids[:3], q, [1, 1, 1], 12, batch_size=4)
    assert pred.shape == (3,) and 0 <= acc <= 100
