"""Atlas's retrieval rounds: joint training of retriever and reader with the
index refreshed every `period` steps (Izacard et al. 2022, "re-indexing").

Each round, from the model_dir's latest checkpoint (or `init_from` before
the first):

  1. embeds every passage with the current retriever's passage side and
     builds a faiss index (t5mtl.retrieval.index), saved under
     model_dir/indexes/step_N next to checkpoint N;
  2. retrieves the top-k passages of each training question with the
     current query side;
  3. registers the questions' FiD rows over those passages as a seqio task
     (t5mtl.data.fid_task) and resumes `train()` on it for `period` steps.

The trainer does the rest (checkpoints, resume, metrics), so a run killed
in a round resumes from its last checkpoint and rebuilds that round's index.
`atlas_init_dir` writes the starting point: a reader from a T5 model_dir and
a retriever from a DualEncoder (or T5) model_dir, as one AtlasModel dir.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Mapping, Sequence

import jax
import numpy as np

from t5mtl import paths
from t5mtl.data.data_config import DataConfig
from t5mtl.data.fewshot_qa import QAExample
from t5mtl.data.fid_features import DEFAULT_LENGTHS, fid_batch, passage_text
from t5mtl.data.fid_task import register_fid_task
from t5mtl.data.passages import Passage
from t5mtl.errors import T5mtlError
from t5mtl.models.atlas import AtlasModel
from t5mtl.retrieval.embed import embed_texts
from t5mtl.retrieval.index import PassageIndex
from t5mtl.train import model_dir as model_dirs
from t5mtl.train.init_from import load_source_params
from t5mtl.train.trainer import CheckpointConfig, train

INDEXES = "indexes"


def index_dir(model_dir: str, step: int) -> str:
    """Where the round starting at `step` saves its index."""
    return paths.join(model_dir, INDEXES, f"step_{step}")


@dataclasses.dataclass(frozen=True)
class Round:
    """What a round retrieved: its start step, each question's ranked ids."""
    step: int
    retrieved: list


class RetrievalRounds:
    """Embedding, indexing and retrieval with an AtlasModel's retriever; the
    two jitted sides are compiled once and reused by every round."""

    def __init__(self, model: AtlasModel, passages: Sequence[Passage], vocabulary,
                 k: int, lengths: Mapping[str, int] | None = None, title: bool = False,
                 index_kind: str = "flat", embed_batch_size: int = 64):
        if not isinstance(model, AtlasModel):
            raise T5mtlError(f"retrieval rounds train an AtlasModel, got {type(model).__name__}")
        if not passages:
            raise T5mtlError("retrieval rounds got no passages")
        self.model, self.passages, self.vocabulary, self.k = model, list(passages), vocabulary, k
        self.lengths = {**DEFAULT_LENGTHS, **(lengths or {})}
        self.title, self.index_kind, self.embed_batch_size = title, index_kind, embed_batch_size
        self.by_id = {p.id: p for p in self.passages}
        retriever = model.retriever
        self._fns = {side: jax.jit(lambda p, t, side=side: retriever.embed(p, t, side))
                     for side in ("query", "passage")}

    def embed(self, retriever_params, texts: Sequence[str], side: str) -> np.ndarray:
        length = self.lengths["query" if side == "query" else "passages"]
        return embed_texts(self.model.retriever, retriever_params, list(texts), self.vocabulary,
                           length, self.embed_batch_size, self._fns[side])

    def build_index(self, retriever_params) -> PassageIndex:
        vectors = self.embed(retriever_params, [passage_text(p, self.title)
                                                for p in self.passages], "passage")
        return PassageIndex.build(vectors, [p.id for p in self.passages], self.index_kind)

    def retrieve(self, retriever_params, index: PassageIndex,
                 questions: Sequence[QAExample]) -> list[list[str]]:
        vectors = self.embed(retriever_params, [q.question for q in questions], "query")
        return index.search(vectors, self.k)[1]

    def rows(self, questions: Sequence[QAExample], retrieved) -> dict[str, np.ndarray]:
        return fid_batch(questions, self.vocabulary, self.by_id, "retrieved", self.k,
                         retrieved, self.lengths, self.title)

    def task_lengths(self) -> dict:
        return {"inputs": self.lengths["inputs"], "queries": self.lengths["query"],
                "passages": self.lengths["passages"], "targets": self.lengths["targets"]}


def current_params(model: AtlasModel, model_dir: str, init_from: str | None):
    """(params, step) the next round starts from: the model_dir's latest
    checkpoint, else `init_from`'s (step 0)."""
    if model_dirs.is_model_dir(model_dir):
        with model_dirs.checkpoint_manager(model_dir) as manager:
            step = manager.latest_step()
        if step is not None:
            return model.adapt_params(model_dirs.restore_params(model_dir, step)), step
    if init_from is None:
        raise T5mtlError(f"{model_dir!r} has no checkpoint and no init_from was given: the "
                         f"first round's retriever would be untrained")
    return load_source_params(init_from, model), 0


def train_rounds(model_dir: str, model: AtlasModel, rounds: RetrievalRounds,
                 questions: Sequence[QAExample], num_steps: int, period: int,
                 batch_size: int, init_from: str | None = None,
                 task_name: str = "atlas_round", keep: int = 2, **train_kwargs) -> list[Round]:
    """Trains `model` in `model_dir` to `num_steps`, refreshing the index
    every `period` steps (module docstring); returns each round run here.
    `train_kwargs` go to `train()` (optimizer, seed, log_period, ...)."""
    if period < 1 or num_steps < 1:
        raise T5mtlError(f"period and num_steps must be at least 1, got {period}, {num_steps}")
    if not questions:
        raise T5mtlError("retrieval rounds got no training questions")
    done = []
    while True:
        params, step = current_params(model, model_dir, init_from)
        if step >= num_steps:
            return done
        index = rounds.build_index(params["retriever"])
        index.save(index_dir(model_dir, step))
        retrieved = rounds.retrieve(params["retriever"], index, questions)
        register_fid_task(task_name, rounds.rows(questions, retrieved), rounds.vocabulary)
        data = DataConfig(task_name, rounds.task_lengths(), batch_size=batch_size, pack=False,
                          truncation_check_examples=0)
        checkpoints = CheckpointConfig(period=period, keep=keep, init_from=init_from)
        train(model_dir, model=model, data=data, num_steps=min(step + period, num_steps),
              checkpoints=checkpoints, **train_kwargs)
        done.append(Round(step, retrieved))


def atlas_init_dir(dst: str, model: AtlasModel, reader_from: str, retriever_from: str) -> None:
    """Writes an AtlasModel dir at step 0 (model.json and params): the reader
    from `reader_from` (a T5 model_dir, HF T5 dir or t5x checkpoint, through
    FusionInDecoder.adapt_params), the retriever from `retriever_from` (a
    DualEncoder or T5 model_dir)."""
    if model_dirs.is_model_dir(dst):
        raise T5mtlError(f"{dst!r} is already a model directory")
    params = {"reader": load_source_params(reader_from, model.reader),
              "retriever": load_source_params(retriever_from, model.retriever)}
    params = jax.tree.map(np.asarray, params)
    os.makedirs(dst, exist_ok=True)
    model_dirs.write_model_json(dst, model)
    model_dirs.save_params(dst, params, step=0)
