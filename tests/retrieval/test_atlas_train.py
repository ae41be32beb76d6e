"""Atlas few-shot training end to end on a tiny model through `t5mtl atlas`
(gin/runs/atlas_fewshot.gin with t5_tiny overrides; t5mtl/retrieval/rounds.py,
atlas_fewshot.py): the start dir joins a reader and a retriever from a T5
model_dir; each round's saved index holds the passage embeddings of that
round's checkpoint (refreshed: the retriever trains fully, so they move) and
reloads with identical search results; `train()` read the questions' FiD
rows through the seqio task (t5mtl/data/fid_task.py) and logged the
distillation over every question; a finished dir runs no round."""
import json

import gin
import jax
import numpy as np
import pytest

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
LENGTHS = {"inputs": 48, "query": 16, "passages": 16, "targets": 4}
CORPUS = 10


def _same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.fixture(scope="module")
def run(tmp_path_factory, shared_data_dir):
    from t5mtl import cli
    from t5mtl.data import fewshot_qa, passages
    from t5mtl.data.data_dir import set_data_dir
    root = tmp_path_factory.mktemp("atlas_rounds")
    t5 = EncoderDecoderModel(CONFIG)
    rng = np.random.default_rng(1)
    t5_params = jax.tree.map(lambda a: rng.normal(0.0, 0.3, a.shape).astype(np.float32),
                             t5.abstract_params())
    model_dirs.write_model_json(str(root / "t5"), t5)
    model_dirs.save_params(str(root / "t5"), t5_params)
    t5_dir = str(root / "t5")
    status = cli.main([
        "atlas", "--gin_file=gin/runs/atlas_fewshot.gin", f"--model_dir={root / 'run'}",
        f"--data_dir={shared_data_dir}", "--gin.get_config.name='t5_tiny'",
        f"--gin.atlas_fewshot_train.reader_from='{t5_dir}'",
        f"--gin.atlas_fewshot_train.retriever_from='{t5_dir}'",
        "--gin.atlas_fewshot_train.k=2", "--gin.atlas_fewshot_train.num_steps=2",
        "--gin.atlas_fewshot_train.period=1", "--gin.atlas_fewshot_train.batch_size=4",
        f"--gin.atlas_fewshot_train.lengths={LENGTHS}",
        f"--gin.atlas_fewshot_train.corpus_limit={CORPUS}",
        "--gin.atlas_fewshot_train.log_period=1",
        "--gin.atlas_fewshot_train.show_progress=False",
        "--gin.AtlasModel.retriever_training='full'"])
    assert status == 0
    gin.clear_config()                  # the run's bindings stay out of the checks
    set_data_dir(shared_data_dir)
    model = AtlasModel(FusionInDecoder(CONFIG), DualEncoder(CONFIG, shared=False),
                       distillation="adist", retriever_training="full")
    rounds = atlas_rounds.RetrievalRounds(model, passages.passage_corpus(limit=CORPUS), VOCAB,
                                          k=2, lengths=LENGTHS)
    questions = fewshot_qa.fewshot_split(fewshot_qa.squad_questions())[0]
    yield root, model, rounds, questions, t5_params
    set_data_dir(None)


def test_the_start_dir_joins_reader_and_retriever_from_their_sources(run):
    root, model, *_, t5_params = run
    params = model.adapt_params(model_dirs.restore_params(str(root / "run" / "init"), 0))
    assert _same(params["reader"], t5_params)
    for side in ("query", "passage"):
        assert _same(params["retriever"][side],
                     DualEncoder(CONFIG).adapt_params(t5_params))
    with pytest.raises(T5mtlError, match="already a model directory"):
        atlas_rounds.atlas_init_dir(str(root / "run" / "init"), model, str(root / "t5"),
                                    str(root / "t5"))


def test_each_round_indexes_with_its_checkpoint_and_reloads_identically(run):
    root, model, rounds, questions, _ = run
    starts = {0: model.adapt_params(model_dirs.restore_params(str(root / "run" / "init"), 0)),
              1: model.adapt_params(model_dirs.restore_params(str(root / "run"), 1))}
    texts = [p.text for p in rounds.passages]
    saved = {}
    for step, params in starts.items():
        saved[step] = PassageIndex.load(atlas_rounds.index_dir(str(root / "run"), step))
        want = rounds.embed(params["retriever"], texts, "passage")
        np.testing.assert_allclose(saved[step].embeddings(), want, rtol=1e-5, atol=1e-6)
        got = rounds.retrieve(params["retriever"], saved[step], questions)
        assert got == rounds.retrieve(params["retriever"], rounds.build_index(
            params["retriever"]), questions)
        assert all(len(ids) == 2 for ids in got)
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
