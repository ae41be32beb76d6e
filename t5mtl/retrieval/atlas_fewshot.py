"""Atlas few-shot QA training from gin: `t5mtl atlas --gin_file=gin/runs/atlas_fewshot.gin
--model_dir=DIR --data_dir=../shared/data`.

The corpus is t5mtl.data.passages.passage_corpus (every SQuAD dev paragraph,
then raw_text_en's books in 100-word windows), the questions the few-shot
training split of t5mtl.data.fewshot_qa (64, seed 0). The AtlasModel starts
from `reader_from` and `retriever_from` (the reader's vocabulary, or the
default one where its model.json names none; joined into model_dir/init by
t5mtl.retrieval.rounds.atlas_init_dir) and trains by retrieval rounds,
the index refreshed every `period` steps (None: once, the right choice for
query-side training). bench/atlas_fewshot.py evaluates the result.
"""
from __future__ import annotations

import os
from typing import Mapping

import gin

from t5mtl.errors import T5mtlError
from t5mtl.models.atlas import AtlasModel

INIT = "init"


@gin.configurable
def atlas_fewshot_train(model_dir: str, model: AtlasModel = gin.REQUIRED,
                        reader_from: str = gin.REQUIRED, retriever_from: str = gin.REQUIRED,
                        k: int = 5, num_steps: int = 200, period: int | None = None,
                        batch_size: int = 8, lengths: Mapping[str, int] | None = None,
                        learning_rate: float = 1e-3, train_size: int = 64,
                        corpus_limit: int | None = None, log_period: int = 20,
                        show_progress: bool = True):
    """Trains `model` in `model_dir` (module docstring); returns the
    RetrievalRounds it trained with (corpus, vocabulary, lengths, k)."""
    import t5mtl
    from t5mtl.data import fewshot_qa, passages
    from t5mtl.data.vocab import get_vocabulary
    from t5mtl.retrieval import rounds as atlas_rounds
    from t5mtl.train.optimizers import create_optimizer
    if not isinstance(model, AtlasModel):
        raise T5mtlError(f"atlas_fewshot_train.model must be an AtlasModel, got {model!r}")
    corpus = passages.passage_corpus(limit=corpus_limit)
    train_qs, _ = fewshot_qa.fewshot_split(fewshot_qa.squad_questions(), train_size=train_size,
                                           seed=0)
    init = os.path.join(model_dir, INIT)
    if not os.path.exists(os.path.join(init, "model.json")):
        atlas_rounds.atlas_init_dir(init, model, reader_from, retriever_from)
    vocabulary = t5mtl.load(reader_from).vocabulary or get_vocabulary()
    rounds = atlas_rounds.RetrievalRounds(model, corpus, vocabulary, k, lengths)
    atlas_rounds.train_rounds(model_dir, model, rounds, train_qs, num_steps=num_steps,
                              period=period or num_steps, batch_size=batch_size,
                              init_from=init,
                              optimizer=create_optimizer("adafactor", learning_rate),
                              log_period=log_period, show_progress=show_progress)
    return rounds
