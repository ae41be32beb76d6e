"""Vocabularies: bytes (the offline default), SentencePiece in T5's layout, BERT's WordPiece.

T5's layout: ids 0, 1, 2 are PAD, EOS and UNK (no BOS), then the model's
pieces (32,000 for the released T5 vocabulary), then 100 extra ids used as
span-corruption sentinels. The extra ids count down from the top, so
`<extra_id_0>` is the highest id (`vocab_size - 1`), `<extra_id_1>` the one
below it, and so on. `sentinel_id(vocab, i)` returns them for any vocabulary
with extra ids, the byte vocabulary included.

Which vocabulary tasks use is chosen in gin, e.g.

    get_vocabulary.kind = "sentencepiece"
    get_vocabulary.path = "vocab/spm_32k.model"   # relative to the data_dir

Task modules call `get_vocabulary()` when they register, so the binding has to
be parsed before they are imported (the CLI parses gin first).
`train_sentencepiece` makes a T5-layout model from local text files, offline.

WordPiece vocabularies (BERT's vocab.txt; t5mtl/data/wordpiece.py) have
[PAD] = 0, no EOS and no extra ids: kind "wordpiece" with a path (and
`lowercase`, HF's do_lower_case), or "wordpiece_en", the uncased 8,000-token
vocabulary shipped in t5mtl/data/vocabs (made by t5mtl.data.wordpiece_recipe
from raw_text_en).
"""
from __future__ import annotations

import functools
import logging
import os
from typing import Sequence

import gin
import seqio
import tensorflow as tf

from t5mtl.data.wordpiece import WordPieceVocabulary
from t5mtl.errors import T5mtlError

PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
T5_NUM_PIECES = 32000
DEFAULT_EXTRA_IDS = 100
VOCABULARY_KINDS = ("byte", "sentencepiece", "wordpiece", "wordpiece_en")
WORDPIECE_EN_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                 "vocabs", "wordpiece_en_8k.txt")


@gin.configurable
def get_vocabulary(kind: str = "byte", path: str | None = None,
                   extra_ids: int | None = None, lowercase: bool = True) -> seqio.Vocabulary:
    """Returns the vocabulary tasks register with (by default bytes + 100 extra ids).

    Args:
      kind: "byte" (seqio.ByteVocabulary), "sentencepiece"
        (seqio.SentencePieceVocabulary), "wordpiece" (a BERT vocab.txt) or
        "wordpiece_en" (the shipped one; see the module docstring).
      path: the SentencePiece model or the vocab.txt; an absolute path, or one
        relative to the data_dir (see t5mtl.data.data_dir). Only for
        "sentencepiece" and "wordpiece".
      extra_ids: how many sentinel ids to add on top (default: 100, as T5;
        WordPiece vocabularies take none).
      lowercase: for "wordpiece": strip accents and lowercase (uncased
        vocabularies); "wordpiece_en" is uncased.

    The same arguments give the same object, so tasks that share a vocabulary
    can be mixed.
    """
    if kind not in VOCABULARY_KINDS:
        raise T5mtlError(
            f"unknown vocabulary kind {kind!r}; choose one of {VOCABULARY_KINDS}")
    if kind in ("wordpiece", "wordpiece_en"):
        if extra_ids:
            raise T5mtlError(f"a WordPiece vocabulary takes no extra ids (got {extra_ids})")
        if kind == "wordpiece_en":
            if path is not None:
                raise T5mtlError(f"the wordpiece_en vocabulary takes no path (got {path!r})")
            return _wordpiece_vocabulary(WORDPIECE_EN_PATH, True)
        if not path:
            raise T5mtlError("a wordpiece vocabulary needs a vocab.txt: bind get_vocabulary.path")
        return _wordpiece_vocabulary(_resolve_model_path(path, "WordPiece vocabulary"),
                                     bool(lowercase))
    extra_ids = DEFAULT_EXTRA_IDS if extra_ids is None else extra_ids
    if extra_ids < 0:
        raise T5mtlError(f"extra_ids must be >= 0, got {extra_ids}")
    if kind == "byte":
        if path is not None:
            raise T5mtlError(f"the byte vocabulary takes no path (got {path!r})")
        return _byte_vocabulary(extra_ids)
    if not path:
        raise T5mtlError(
            "a sentencepiece vocabulary needs a model path: bind "
            "get_vocabulary.path (or train one with train_sentencepiece)")
    return _sentencepiece_vocabulary(_resolve_model_path(path), extra_ids)


@functools.lru_cache(maxsize=None)
def _byte_vocabulary(extra_ids: int) -> seqio.ByteVocabulary:
    return seqio.ByteVocabulary(extra_ids=extra_ids)


@functools.lru_cache(maxsize=None)
def _sentencepiece_vocabulary(path: str, extra_ids: int) -> seqio.SentencePieceVocabulary:
    vocab = seqio.SentencePieceVocabulary(path, extra_ids=extra_ids)
    try:
        tokenizer = vocab.tokenizer  # loads the model: fail here, not mid-training
    except Exception as e:  # sentencepiece raises bare RuntimeError/DecodeError
        raise T5mtlError(f"{path!r} is not a SentencePiece model: {e}") from e
    if (tokenizer.pad_id(), tokenizer.eos_id()) != (PAD_ID, EOS_ID):
        raise T5mtlError(
            f"SentencePiece model {path!r} has pad_id={tokenizer.pad_id()}, "
            f"eos_id={tokenizer.eos_id()}; T5's layout needs pad_id=0, eos_id=1 "
            f"(train_sentencepiece makes such models)")
    return vocab


@functools.lru_cache(maxsize=None)
def _wordpiece_vocabulary(path: str, lowercase: bool) -> WordPieceVocabulary:
    return WordPieceVocabulary(path, lowercase=lowercase)


def _resolve_model_path(path: str, what: str = "SentencePiece model") -> str:
    if os.path.isabs(path) or "://" in path:
        if not tf.io.gfile.exists(path):
            raise T5mtlError(f"{what} {path!r} does not exist")
        return path
    from t5mtl.data.data_dir import data_path
    return data_path(path)


def vocabulary_spec(vocab: seqio.Vocabulary) -> dict | None:
    """model.json's description of a seqio vocabulary (None: not describable),
    so that infer can turn text into ids and back."""
    if isinstance(vocab, seqio.ByteVocabulary):
        return {"kind": "byte", "extra_ids": vocab.extra_ids}
    if isinstance(vocab, seqio.SentencePieceVocabulary):
        from t5mtl import paths
        return {"kind": "sentencepiece", "path": paths.absolute(vocab.sentencepiece_model_file),
                "extra_ids": vocab.extra_ids}
    if isinstance(vocab, WordPieceVocabulary):
        if vocab == _wordpiece_vocabulary(WORDPIECE_EN_PATH, True):
            return {"kind": "wordpiece_en"}
        from t5mtl import paths
        return {"kind": "wordpiece", "path": paths.absolute(vocab.vocab_file),
                "lowercase": vocab.lowercase}
    return None


def vocabulary_from_spec(spec: dict | None) -> seqio.Vocabulary | None:
    """The seqio vocabulary model.json describes (None: none known)."""
    if not spec:
        return None
    kind = spec.get("kind")
    if kind == "byte":
        return seqio.ByteVocabulary(extra_ids=spec.get("extra_ids", 100))
    if kind == "sentencepiece":
        from t5mtl import paths
        if not spec.get("path") or not paths.isfile(spec["path"]):
            raise T5mtlError(f"sentencepiece model {spec.get('path')!r} not found")
        return seqio.SentencePieceVocabulary(spec["path"], extra_ids=spec.get("extra_ids", 100))
    if kind == "wordpiece_en":
        return get_vocabulary("wordpiece_en")
    if kind == "wordpiece":
        return WordPieceVocabulary(spec.get("path") or "", lowercase=spec.get("lowercase", True))
    raise T5mtlError(f"unknown vocabulary kind {kind!r} (one of {VOCABULARY_KINDS})")


def sentinel_id(vocab: seqio.Vocabulary, i: int = 0) -> int:
    """The id of `<extra_id_{i}>`: `vocab_size - 1 - i` (sentinels count down)."""
    if not 0 <= i < vocab.extra_ids:
        raise T5mtlError(
            f"sentinel {i} does not exist: the vocabulary has {vocab.extra_ids} extra ids")
    return vocab.vocab_size - 1 - i


def train_sentencepiece(files: Sequence[str], model_path: str,
                        vocab_size: int = T5_NUM_PIECES,
                        model_type: str = "unigram",
                        character_coverage: float = 1.0,
                        input_sentence_size: int = 2_000_000,
                        max_sentence_length: int = 4192,
                        seed: int = 0,
                        num_threads: int = 1) -> str:
    """Trains a SentencePiece model in T5's layout from text files, offline.

    T5's layout: pad=0, eos=1, unk=2 and no BOS; pieces start at 3. Load the
    result with `get_vocabulary("sentencepiece", path, extra_ids=100)` to add
    the sentinels on top (a 32,000-piece model then has 32,100 ids).

    Args:
      files: text files, one sentence or line per line (as SentencePiece reads).
      model_path: where to write the model; must end in ".model" (a ".vocab"
        file with the pieces is written beside it).
      vocab_size: number of pieces, PAD/EOS/UNK included (T5: 32000).
      model_type: "unigram" (T5's) or "bpe", "char", "word".
      character_coverage: fraction of characters the pieces must cover.
      input_sentence_size: at most this many lines are sampled for training.
      max_sentence_length: longer lines (in bytes) are skipped.
      seed: seeds SentencePiece's sampling, so the same inputs give the same model.
      num_threads: trainer threads.

    Returns:
      model_path.
    """
    import sentencepiece as spm

    if not model_path.endswith(".model"):
        raise T5mtlError(f"model_path must end in '.model', got {model_path!r}")
    if not files:
        raise T5mtlError("train_sentencepiece needs at least one text file")
    for f in files:
        if not tf.io.gfile.exists(f):
            raise T5mtlError(f"training text file {f!r} does not exist")
        if tf.io.gfile.stat(f).length == 0:
            raise T5mtlError(f"training text file {f!r} is empty")
    out_dir = os.path.dirname(model_path)
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
    spm.set_random_generator_seed(seed)
    try:
        spm.SentencePieceTrainer.train(
            input=list(files),
            model_prefix=model_path[:-len(".model")],
            vocab_size=vocab_size,
            model_type=model_type,
            character_coverage=character_coverage,
            input_sentence_size=input_sentence_size,
            shuffle_input_sentence=True,
            max_sentence_length=max_sentence_length,
            pad_id=PAD_ID, eos_id=EOS_ID, unk_id=UNK_ID, bos_id=-1,
            num_threads=num_threads,
            minloglevel=2,
        )
    except RuntimeError as e:  # e.g. vocab_size larger than the text allows
        raise T5mtlError(f"SentencePiece training on {list(files)} failed: {e}") from e
    logging.info("trained a %d-piece SentencePiece model: %s", vocab_size, model_path)
    return model_path
