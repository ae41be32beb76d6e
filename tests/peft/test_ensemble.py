"""Prompt ensembling: N prompts of one frozen base in one batched pass;
scores averaged over the members, generations majority-voted, and
`t5mtl eval --adapter ... --rank` using the averaged option scores; several
adapters served from one base held once."""
import jax.numpy as jnp
import numpy as np
import pytest

import t5mtl
from t5mtl import cli
from t5mtl.data.batches import scoring_batch
from t5mtl.errors import T5mtlError
from t5mtl.infer.rank_classification import rank_classify
from t5mtl.models import param_names
from t5mtl.peft.ensemble import AdapterEnsemble, load_ensemble, majority_vote
from tests.peft.test_prompt_tuning import _tune

INITS = ("random_uniform", "sampled_vocab", "class_labels")


@pytest.fixture(scope="module")
def members(tmp_path_factory, peft_base):
    root = tmp_path_factory.mktemp("members")
    for i, init in enumerate(INITS):
        _tune(root / init, peft_base, init, num_steps=2, lr=0.3, seed=i)
    return [str(root / init) for init in INITS]


def test_majority_vote_by_hand():
    ids = jnp.asarray([[[5, 1, 0], [7, 1, 0]],      # member 0
                       [[6, 1, 0], [7, 1, 0]],      # member 1
                       [[6, 1, 0], [8, 1, 0]]])     # member 2
    np.testing.assert_array_equal(majority_vote(ids), [[6, 1, 0], [7, 1, 0]])
    # No majority: the lowest-numbered member.
    np.testing.assert_array_equal(majority_vote(ids[:, :1].at[2, 0, 0].set(9)), [[5, 1, 0]])


@pytest.mark.slow
def test_one_pass_equals_the_members_combined(members):
    ensemble, params = load_ensemble(members)
    assert isinstance(ensemble, AdapterEnsemble) and ensemble.stacked == (
        "encoder_input/vectors",)
    assert params["encoder_input"]["vectors"].shape == (3, 6, 64)
    loaded = [t5mtl.load(m) for m in members]
    rng = np.random.RandomState(0)
    batch = scoring_batch(rng.randint(3, 300, (4, 20)).tolist(),
                          rng.randint(3, 300, (4, 5)).tolist())
    each = [np.asarray(m.model.score_batch(m.params, batch)) for m in loaded]
    np.testing.assert_allclose(ensemble.score_batch(params, batch), np.mean(each, axis=0),
                               rtol=1e-5)
    enc = {"encoder_input_tokens": batch["encoder_input_tokens"]}
    votes = np.asarray(ensemble.predict_batch(params, enc))
    separately = np.stack([np.asarray(m.model.predict_batch(m.params, enc)) for m in loaded])
    np.testing.assert_array_equal(votes, majority_vote(jnp.asarray(separately)))


def test_rank_classification_averages_option_scores(members, capsys):
    ensemble, params = load_ensemble(members)
    got = rank_classify(ensemble, params, "synth_parity", ("even", "odd"), num_examples=16,
                        input_length=32)
    each = [rank_classify(m.model, m.params, "synth_parity", ("even", "odd"), num_examples=16,
                          input_length=32)["scores"] for m in map(t5mtl.load, members)]
    np.testing.assert_allclose(got["scores"], np.mean(each, axis=0), rtol=1e-5)
    # The command line: --adapter (repeatable) evaluates the ensemble.
    argv = ["eval", "--task", "synth_parity", "--rank", "--num_examples", "16",
            "--gin.EvalConfig.task_feature_lengths={'inputs': 32, 'targets': 8}"]
    assert cli.main(argv + [a for m in members for a in ("--adapter", m)]) == 0
    out = capsys.readouterr().out
    assert "synth_parity" in out and f"{got['accuracy']:.2f}" in out


def test_several_adapters_served_from_one_base(members, peft_base):
    base = t5mtl.load(str(peft_base))
    served = [base.with_adapter(m) for m in members]
    base_leaves = param_names.flatten(base.params)
    rng = np.random.RandomState(1)
    inputs = rng.randint(3, 300, (3, 12)).tolist()
    targets = rng.randint(3, 300, (3, 4)).tolist()
    for adapter, path in zip(served, members):
        leaves = param_names.flatten(adapter.params)
        # The base is held once: every base leaf is the base model's own array.
        assert all(leaves[name] is leaf for name, leaf in base_leaves.items())
        assert set(leaves) - set(base_leaves) == {"encoder_input/vectors"}
        np.testing.assert_array_equal(adapter.score(inputs, targets),
                                      t5mtl.load(path).score(inputs, targets))
    assert not np.allclose(served[0].score(inputs, targets), served[1].score(inputs, targets))
    changed = dict(base_leaves)
    changed["token_embedder/embedding"] = changed["token_embedder/embedding"] + 1.0
    other = t5mtl.api.Model(base.model, param_names.unflatten(changed), base.vocabulary)
    with pytest.raises(T5mtlError, match="whose parameters have changed"):
        other.with_adapter(members[0])
    with pytest.raises(T5mtlError, match="not an adapter directory"):
        base.with_adapter(str(peft_base))


def test_members_must_share_one_base(members, peft_base):
    with pytest.raises(T5mtlError, match="not an adapter directory"):
        load_ensemble([members[0], str(peft_base)])
