"""Cross-entropy, z-loss, label smoothing and loss normalization against
values computed by hand or with plain numpy loops."""
import math

import jax.numpy as jnp
import numpy as np
import pytest

from t5mtl.errors import T5mtlError
from t5mtl.models import losses


def _np_token_loss(logits_row, target, z_loss, ls):
    """One token's loss with plain numpy, written from the definition."""
    v = len(logits_row)
    m = max(logits_row)
    log_z = m + math.log(sum(math.exp(x - m) for x in logits_row))
    q = [ls / (v - 1)] * v
    q[target] = 1.0 - ls
    ce = -sum(qi * (x - log_z) for qi, x in zip(q, logits_row))
    entropy = -sum(qi * math.log(qi) for qi in q if qi > 0)
    return ce - entropy, z_loss * log_z ** 2


def test_uniform_two_way_by_hand():
    logits = jnp.zeros((1, 1, 2))
    targets = jnp.array([[1]])
    loss, m = losses.cross_entropy_with_z_loss(logits, targets)
    assert float(m["cross_entropy"]) == pytest.approx(math.log(2), rel=1e-6)
    assert float(m["z_loss"]) == pytest.approx(1e-4 * math.log(2) ** 2, rel=1e-5)
    assert float(loss) == pytest.approx(math.log(2) + 1e-4 * math.log(2) ** 2, rel=1e-6)
    # Label smoothing 0.1 over V=2: q = (0.1, 0.9); loss = ln 2 - H(q).
    loss, m = losses.cross_entropy_with_z_loss(logits, targets, z_loss=0.0, label_smoothing=0.1)
    entropy = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))  # 0.3250829...
    assert float(loss) == pytest.approx(math.log(2) - entropy, rel=1e-5)
    assert float(loss) == pytest.approx(0.3680642, rel=1e-5)


def test_perfect_smoothed_prediction_costs_zero():
    # logits = log q: softmax equals the smoothed target and logsumexp is 0,
    # so both the cross-entropy (minus its constant) and the z-loss vanish.
    v, ls, target = 5, 0.2, 3
    q = np.full(v, ls / (v - 1))
    q[target] = 1 - ls
    logits = jnp.asarray(np.log(q), jnp.float32)[None, None]
    loss, m = losses.cross_entropy_with_z_loss(logits, jnp.array([[target]]), label_smoothing=ls)
    assert abs(float(loss)) < 1e-6
    assert abs(float(m["z_loss"])) < 1e-12


def _batch():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 4, 6)).astype(np.float32) * 2
    targets = np.array([[3, 1, 5, 0], [2, 0, 0, 0]])
    return logits, targets


@pytest.mark.parametrize("ls", [0.0, 0.1])
def test_normalizations_against_numpy_loops(ls):
    logits, targets = _batch()
    weights = (targets > 0).astype(np.float32)
    per_tok = {}
    for b in range(2):
        for t in range(4):
            if weights[b, t]:
                per_tok[b, t] = _np_token_loss(logits[b, t].tolist(), targets[b, t], 1e-4, ls)
    ce_sum = sum(ce for ce, _ in per_tok.values())
    z_sum = sum(z for _, z in per_tok.values())
    n_tokens = 4  # 3 + 1 real target tokens

    loss, m = losses.cross_entropy_with_z_loss(logits, targets, label_smoothing=ls)
    assert float(loss) == pytest.approx((ce_sum + z_sum) / n_tokens, rel=1e-5)
    assert float(m["z_loss"]) == pytest.approx(z_sum / n_tokens, rel=1e-5)
    assert float(m["target_tokens"]) == 4 and float(m["num_sequences"]) == 2

    loss, _ = losses.cross_entropy_with_z_loss(
        logits, targets, label_smoothing=ls, normalization="constant",
        loss_normalizing_factor=10.0)
    assert float(loss) == pytest.approx((ce_sum + z_sum) / 10.0, rel=1e-5)

    seq_means = []
    for b in range(2):
        toks = [sum(per_tok[b, t]) for t in range(4) if (b, t) in per_tok]
        seq_means.append(sum(toks) / len(toks))
    loss, _ = losses.cross_entropy_with_z_loss(
        logits, targets, label_smoothing=ls, normalization="average_per_sequence")
    assert float(loss) == pytest.approx(sum(seq_means) / 2, rel=1e-5)


def test_per_sequence_with_packed_segments():
    logits, targets = _batch()
    # Row 0 packs two examples: tokens 0-1 (segment 1) and token 2 (segment 2).
    segment_ids = np.array([[1, 1, 2, 0], [1, 0, 0, 0]])
    weights = (targets > 0).astype(np.float32)
    tok = {(b, t): sum(_np_token_loss(logits[b, t].tolist(), targets[b, t], 1e-4, 0.0))
           for b in range(2) for t in range(4) if weights[b, t]}
    expected = ((tok[0, 0] + tok[0, 1]) / 2 + tok[0, 2] + tok[1, 0]) / 3
    loss, m = losses.cross_entropy_with_z_loss(
        logits, targets, normalization="average_per_sequence", segment_ids=segment_ids)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert float(m["num_sequences"]) == pytest.approx(3.0)


def test_accuracy_and_counts():
    logits = np.zeros((1, 3, 4), np.float32)
    logits[0, 0, 2] = 5  # right
    logits[0, 1, 1] = 5  # wrong (target 3)
    logits[0, 2, 0] = 5  # padding, ignored
    targets = np.array([[2, 3, 0]])
    _, m = losses.cross_entropy_with_z_loss(logits, targets)
    assert float(m["correct_tokens"]) == 1 and float(m["target_tokens"]) == 2
    assert float(m["accuracy"]) == pytest.approx(0.5)


def test_external_denominator_makes_halves_add_up():
    logits, targets = _batch()
    full, fm = losses.cross_entropy_with_z_loss(logits, targets)
    denom = losses.loss_denominator_fn("w")({"w": (targets > 0).astype(np.float32)})
    parts = [losses.cross_entropy_with_z_loss(logits[i:i + 1], targets[i:i + 1],
                                              loss_denominator=denom) for i in range(2)]
    assert float(parts[0][0] + parts[1][0]) == pytest.approx(float(full), rel=1e-6)
    summed = {k: parts[0][1][k] + parts[1][1][k] for k in fm}
    assert float(losses.finalize_metrics(summed)["accuracy"]) == pytest.approx(
        float(fm["accuracy"]))


def test_bad_input_names_the_value():
    logits, targets = _batch()
    with pytest.raises(T5mtlError, match="per_token"):
        losses.cross_entropy_with_z_loss(logits, targets, normalization="per_token")
    with pytest.raises(T5mtlError, match="loss_normalizing_factor"):
        losses.cross_entropy_with_z_loss(logits, targets, normalization="constant")
    with pytest.raises(T5mtlError, match="1.5"):
        losses.cross_entropy_with_z_loss(logits, targets, label_smoothing=1.5)
    with pytest.raises(T5mtlError, match="decoder_loss_weights"):
        losses.loss_denominator_fn()({"targets": targets})
