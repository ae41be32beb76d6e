"""Decoding: beam search against exhaustive search, beam 1 vs greedy, sampling seeds."""
import itertools

import jax
import numpy as np
import pytest

from t5mtl.api import Model
from t5mtl.models import get_config, init_params
from t5mtl.models.decoding import filter_logits, length_penalty
from t5mtl.models.encoder_decoder import DecodeConfig, EncoderDecoderModel


def _model(scan=False, **overrides):
    cfg = get_config("t5_tiny", scan_layers=scan, **overrides)
    return cfg, init_params(cfg, jax.random.PRNGKey(7))


def _greedy(cfg, n):
    return EncoderDecoderModel(cfg).decoder(DecodeConfig(max_decode_length=n))


def _beam(cfg, params, enc, n, beams, alpha=0.6):
    decode = DecodeConfig(max_decode_length=n, method="beam", beam_size=beams, alpha=alpha)
    return EncoderDecoderModel(cfg).beam_search(params, {"encoder_input_tokens": enc}, decode)


def _inputs(vocab, batch=3):
    rng = np.random.RandomState(0)
    enc = rng.randint(2, vocab, (batch, 9)).astype(np.int32)
    enc[1, 5:] = 0
    return enc


@pytest.mark.parametrize("scan", [False, True])
def test_beam_one_equals_greedy(scan):
    cfg, params = _model(scan)
    enc = _inputs(cfg.vocab_size)
    greedy = _greedy(cfg, 12)(params, enc, jax.random.PRNGKey(0))
    beam, _ = _beam(cfg, params, enc, 12, 1)
    np.testing.assert_array_equal(np.asarray(beam), np.asarray(greedy))


def test_beam_search_finds_the_exhaustive_optimum():
    """Vocab 5, 3 new tokens: 25 beams hold every 2-token prefix, so beam search
    must return the best of all sequences under T5's length penalty."""
    cfg, params = _model(vocab_size=5)
    enc = _inputs(5, batch=2)
    model = Model(EncoderDecoderModel(cfg), params)
    alpha, n = 0.6, 3
    ids, scores = _beam(cfg, params, enc, n, 25, alpha)
    for row in range(enc.shape[0]):
        best, best_score = None, -np.inf
        for seq in itertools.product(range(5), repeat=n):
            seq = list(seq)
            if 1 in seq:                     # ends at the first EOS
                seq = seq[:seq.index(1) + 1]
            dec_in = np.array([[0] + seq[:-1]], np.int32)
            logp = jax.nn.log_softmax(model.logits(enc[row:row + 1], dec_in)[0])
            total = float(sum(logp[t, tok] for t, tok in enumerate(seq)))
            # Unfinished sequences count at full length, as beam search does.
            score = total / length_penalty(len(seq), alpha)
            if score > best_score + 1e-6:
                best, best_score = seq, score
        got = [int(t) for t in np.asarray(ids[row])]
        got = got[:got.index(1) + 1] if 1 in got else got
        assert got == best
        assert float(scores[row]) == pytest.approx(best_score, abs=1e-4)


def test_sampling_is_reproducible_by_seed():
    cfg, params = _model()
    enc = _inputs(cfg.vocab_size)
    run = EncoderDecoderModel(cfg).decoder(DecodeConfig(max_decode_length=10, method="sample"))
    a = np.asarray(run(params, enc, jax.random.PRNGKey(3)))
    b = np.asarray(run(params, enc, jax.random.PRNGKey(3)))
    c = np.asarray(run(params, enc, jax.random.PRNGKey(4)))
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()


def test_top_k_and_top_p_filtering():
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]], np.float32))
    k2 = np.asarray(filter_logits(logits, 1.0, 2, 1.0))
    assert (k2[0, :2] > -1e9).all() and (k2[0, 2:] < -1e9).all()
    # Nucleus 0.7: 0.5 alone is short of 0.7, 0.5 + 0.3 reaches it.
    p = np.asarray(filter_logits(logits, 1.0, 0, 0.7))
    assert (p[0, :2] > -1e9).all() and (p[0, 2:] < -1e9).all()
    # Nucleus smaller than the top token keeps only the top token.
    p = np.asarray(filter_logits(logits, 1.0, 0, 0.1))
    assert (p[0, :1] > -1e9).all() and (p[0, 1:] < -1e9).all()
