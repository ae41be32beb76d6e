"""Atlas's retrieval rounds (t5mtl/retrieval/rounds.py) end to end on a tiny
model: the start dir joins a reader and a retriever from a T5 model_dir;
each round's saved index holds the passage embeddings of that round's
checkpoint (refreshed: the retriever trains, so they move), reloads with
identical search results, and fed the questions' FiD rows that `train()`
read through the seqio task (t5mtl/data/fid_task.py) with the distillation
metrics logged; a finished dir runs no round."""
import json

import jax
import numpy as np
import pytest

from t5mtl.data.fewshot_qa import QAExample
from t5mtl.data.passages import Passage
from t5mtl.data.vocab import get_vocabulary
from t5mtl.errors import T5mtlError
from t5mtl.models import get_config
from t5mtl.models.atlas import AtlasModel
from t5mtl.models.dual_encoder import DualEncoder
from t5mtl.models.encoder_decoder import EncoderDecoderModel
from t5mtl.models.fusion_in_decoder import FusionInDecoder
from t5mtl.retrieval import rounds as atlas_rounds
from t5mtl.retrieval.index import PassageIndex
from t5mtl.train import model_dir as model_dirs

CONFIG = get_config("t5_tiny")
VOCAB = get_vocabulary("byte")
WORDS = "cats dogs owls purr bark hoot night day red blue green river hill".split()
LENGTHS = {"inputs": 24, "query": 8, "passages": 16, "targets": 4}


def _corpus():
    rng = np.random.RandomState(0)
    passages = [Passage(f"p{i}", f"t{i}", " ".join(rng.choice(WORDS, 3))) for i in range(10)]
    questions = [QAExample(f"q{i}", " ".join(rng.choice(WORDS, 2)), (WORDS[i],), f"p{i}")
                 for i in range(4)]
    return passages, questions


def _same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("atlas_rounds")
    t5 = EncoderDecoderModel(CONFIG)
    rng = np.random.default_rng(1)
    t5_params = jax.tree.map(lambda a: rng.normal(0.0, 0.3, a.shape).astype(np.float32),
                             t5.abstract_params())
    model_dirs.write_model_json(str(root / "t5"), t5)
    model_dirs.save_params(str(root / "t5"), t5_params)
    model = AtlasModel(FusionInDecoder(CONFIG), DualEncoder(CONFIG, shared=False),
                       distillation="adist", retriever_training="full")
    atlas_rounds.atlas_init_dir(str(root / "init"), model, str(root / "t5"), str(root / "t5"))
    passages, questions = _corpus()
    rounds = atlas_rounds.RetrievalRounds(model, passages, VOCAB, k=2, lengths=LENGTHS)
    done = atlas_rounds.train_rounds(str(root / "run"), model, rounds, questions, num_steps=2,
                                     period=1, batch_size=4, init_from=str(root / "init"),
                                     log_period=1, show_progress=False)
    return root, model, rounds, questions, t5_params, done


def test_the_start_dir_joins_reader_and_retriever_from_their_sources(run):
    root, model, *_, t5_params, _ = run
    params = model.adapt_params(model_dirs.restore_params(str(root / "init"), 0))
    assert _same(params["reader"], t5_params)
    for side in ("query", "passage"):
        assert _same(params["retriever"][side],
                     DualEncoder(CONFIG).adapt_params(t5_params))
    with pytest.raises(T5mtlError, match="already a model directory"):
        atlas_rounds.atlas_init_dir(str(root / "init"), model, str(root / "t5"),
                                    str(root / "t5"))


def test_each_round_indexes_with_its_checkpoint_and_reloads_identically(run):
    root, model, rounds, questions, _, done = run
    assert [r.step for r in done] == [0, 1]
    starts = {0: model.adapt_params(model_dirs.restore_params(str(root / "init"), 0)),
              1: model.adapt_params(model_dirs.restore_params(str(root / "run"), 1))}
    texts = [p.text for p in rounds.passages]
    saved = {}
    for r in done:
        saved[r.step] = PassageIndex.load(atlas_rounds.index_dir(str(root / "run"), r.step))
        want = rounds.embed(starts[r.step]["retriever"], texts, "passage")
        np.testing.assert_allclose(saved[r.step].embeddings(), want, rtol=1e-5, atol=1e-6)
        assert rounds.retrieve(starts[r.step]["retriever"], saved[r.step], questions) \
            == r.retrieved
        assert all(len(ids) == 2 for ids in r.retrieved)
    assert not np.allclose(saved[0].embeddings(), saved[1].embeddings())   # refreshed


def test_train_read_the_rounds_rows_and_a_finished_dir_runs_no_round(run):
    root, model, rounds, questions, *_ = run
    rows = [json.loads(line) for line in open(root / "run" / "metrics.jsonl")
            if '"train"' in line]
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert r["num_questions"] == 4 and r["distillation_kl"] > 0
        np.testing.assert_allclose(r["loss"], r["reader_loss"] + r["distillation_kl"],
                                   rtol=1e-5)
    assert atlas_rounds.train_rounds(str(root / "run"), model, rounds, questions, num_steps=2,
                                     period=1, batch_size=4, show_progress=False) == []
