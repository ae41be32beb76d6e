"""Image and video seqio tasks over t5mtl.data.vision_data, registered on demand.

CLIP (image-text pairs):

  clip_digits         "image" a digit, "targets" a caption of it in one of
                      DIGIT_TEMPLATES ("a handwritten 3", "the digit 3", ...,
                      a seeded choice per example); train = the digits train
                      split (1,397), validation = its test split (400)
  clip_shapes         "image" drawn shapes, "targets" their caption ("two
                      blue circles at the top"); train 1,440, validation 288
  clip_pretrain       mixture of both, equal rates

LAVENDER (videos, every text answer one wordpiece token):

  lavender_qa         "video", "inputs" a question, "targets" its one-token
                      answer (colour, object or direction; QUESTIONS): three
                      per video, train 4,992, validation 1,248
  lavender_retrieval  "video", "inputs" a caption, "targets" "true" / "false":
                      every video twice, with its own caption and with one
                      that differs in one attribute; train 3,328, validation 832
  lavender_caption    "video", "inputs" "" (empty), "targets" the caption
                      ("a red square moves left"); train 1,664, validation 416
  lavender_mtl        mixture of the three, equal rates

Features: "image" float32 [16, 16, 3] / "video" float32 [4, 16, 16, 3]
(seqio.ContinuousFeature), "inputs" / "targets" wordpiece_en ids without
EOS (the vocabulary has none), plus their "_pretokenized" text and "index"
(int32: the example's row in `task_arrays(name, split)`'s arrays).

    register(vocabulary=None, overwrite=False, seed=0)   all tasks and mixtures
        (a no-op for what is registered already, unless overwrite: `seed`
        picks the data, so re-register with overwrite=True to change it)
    unregister()                                         removes them
    task_arrays(name, split="validation", seed=0) -> (pixels [n, ...] float32,
        records, texts): the numpy data behind a task's split, row for row:
        texts (inputs, targets) strings, records the vision_data record of
        each row (an int label for clip_digits)

Splits are "train" and "validation" (vision_data's "test"). When shuffled,
the source shuffles the whole split (as indices, reshuffled every epoch)
before seqio shards it over hosts, so hosts must share the seed (the
trainer passes DataConfig.seed); seqio's own buffer is SHUFFLE_BUFFER.

In gin (each function registers what it names and returns the name):

    DataConfig.mixture_or_task_name = @register_clip_pretrain()
    DataConfig.mixture_or_task_name = @register_lavender_mtl()
    DataConfig.mixture_or_task_name = @register_vision_task()
    register_vision_task.name = "lavender_qa"
"""
from __future__ import annotations

import functools

import gin
import numpy as np
import seqio
import tensorflow as tf

from t5mtl.data import task_info
from t5mtl.data import vision_data as vd
from t5mtl.data.vocab import get_vocabulary
from t5mtl.errors import T5mtlError

CLIP_TASKS = ("clip_digits", "clip_shapes")
LAVENDER_TASKS = ("lavender_qa", "lavender_retrieval", "lavender_caption")
TASKS = CLIP_TASKS + LAVENDER_TASKS
MIXTURES = {"clip_pretrain": CLIP_TASKS, "lavender_mtl": LAVENDER_TASKS}
SPLITS = {"train": "train", "validation": "test"}       # seqio split -> vision_data split
IMAGE, VIDEO = "image", "video"
TEXT_FEATURES = ("inputs", "targets")
# The source shuffles each split whole (as indices); seqio's buffer after
# preprocessing (filled across epochs, as seqio repeats before it) stays small.
SHUFFLE_BUFFER = 256


def pixel_feature(name: str) -> str:
    """The task's pixel feature: "image" for CLIP tasks, "video" for LAVENDER's."""
    if name in CLIP_TASKS:
        return IMAGE
    if name in LAVENDER_TASKS:
        return VIDEO
    raise T5mtlError(f"unknown vision task {name!r}; choose one of {TASKS}")


def _vision_split(split: str) -> str:
    if split not in SPLITS:
        raise T5mtlError(f"vision tasks have splits {tuple(SPLITS)}, got {split!r}")
    return SPLITS[split]


@functools.lru_cache(16)
def _arrays(name: str, split: str, seed: int):
    s = _vision_split(split)
    if name == "clip_digits":
        images, labels = vd.digits_split(s, seed)
        captions = vd.digit_captions(labels, seed=seed + 1000 * (s == "test"))
        return images, [int(y) for y in labels], [("", c) for c in captions], None
    if name == "clip_shapes":
        images, records = vd.shapes_split(s, seed)
        return images, records, [("", r.caption) for r in records], None
    videos, records = vd.video_split(s, seed)
    if name == "lavender_qa":
        rows = [(i, q, a) for i, r in enumerate(records) for q, a in r.qa]
        return videos, [records[i] for i, _, _ in rows], [(q, a) for _, q, a in rows], \
            np.array([i for i, _, _ in rows], np.int32)
    if name == "lavender_retrieval":
        pairs = vd.retrieval_pairs(records, seed)
        return videos, [records[i] for i, _, _ in pairs], \
            [(c, "true" if m else "false") for _, c, m in pairs], \
            np.array([i for i, _, _ in pairs], np.int32)
    if name == "lavender_caption":
        return videos, records, [("", r.caption) for r in records], None
    raise T5mtlError(f"unknown vision task {name!r}; choose one of {TASKS}")


def task_arrays(name: str, split: str = "validation", seed: int = 0):
    """(pixels, records, texts) of a task's split, row for row as the task
    yields them (unshuffled): pixels float32 [n, 16, 16, 3] or
    [n, 4, 16, 16, 3]; records: digit labels (clip_digits), ShapeRecords or
    VideoRecords; texts: (inputs, targets) strings ("" inputs for CLIP and
    captioning)."""
    pixels, records, texts, rows = _arrays(name, split, seed)
    if rows is not None:
        pixels = pixels[rows]
    return pixels, list(records), list(texts)


def _dataset(name: str, split: str, seed: int, shuffle: bool = False,
             shuffle_seed: int | None = None) -> tf.data.Dataset:
    """The split's examples; with `shuffle`, in a fresh order each pass (the
    whole split, shuffled as indices before the pixels are gathered)."""
    pixels, _, texts, rows = _arrays(name, split, seed)
    n = len(texts)
    feature = pixel_feature(name)
    slices = {"index": np.arange(n, dtype=np.int32),
              "targets": np.array([t for _, t in texts], dtype=object)}
    if name in LAVENDER_TASKS:
        slices["inputs"] = np.array([i for i, _ in texts], dtype=object)
    ds = tf.data.Dataset.from_tensor_slices(slices)
    if shuffle:
        ds = ds.shuffle(n, seed=shuffle_seed, reshuffle_each_iteration=True)
    table = tf.constant(pixels)                          # each picture once
    source_row = tf.constant(np.arange(n, dtype=np.int32) if rows is None else rows)
    return ds.map(lambda ex: {**ex, feature: tf.gather(table, source_row[ex["index"]])},
                  num_parallel_calls=tf.data.AUTOTUNE)


def tokenize_text(dataset: tf.data.Dataset,
                  output_features: dict[str, seqio.Feature]) -> tf.data.Dataset:
    """seqio's tokenize on the text features only (the pixels are left as
    they are, without a "_pretokenized" copy)."""
    text = {k: v for k, v in output_features.items() if k in TEXT_FEATURES}
    return seqio.preprocessors.tokenize(dataset, text, copy_pretokenized=True)


def output_features(name: str, vocabulary: seqio.Vocabulary) -> dict[str, seqio.Feature]:
    """The task's features: the pixels (float32, rank 3 or 4) and its text."""
    feature = pixel_feature(name)
    shape = vd.IMAGE_SHAPE if feature == IMAGE else vd.VIDEO_SHAPE
    out = {feature: seqio.ContinuousFeature(dtype=tf.float32, rank=len(shape))}
    if name in LAVENDER_TASKS:
        out["inputs"] = seqio.Feature(vocabulary, add_eos=False)
    out["targets"] = seqio.Feature(vocabulary, add_eos=False)
    return out


GENERATED = dict(source="generated (t5mtl.data.vision_data)",
                 license="Apache-2.0 (generated by t5mtl)",
                 citation="t5mtl vision data (generated by t5mtl.data.vision_data; this project)",
                 homepage="this project (t5mtl/data/vision_data.py)")
DIGITS = dict(source="sklearn.datasets.load_digits",
              license="CC BY 4.0 (UCI Optical Recognition of Handwritten Digits, as "
                      "shipped in scikit-learn)",
              citation="Alpaydin and Kaynak 1998, Optical Recognition of Handwritten Digits, "
                       "UCI Machine Learning Repository",
              homepage="archive.ics.uci.edu/dataset/80 (scikit-learn's copy)")
CARDS = {
    "clip_digits": dict(category="image_text", fields=("image", "label"), **DIGITS,
                        description="8x8 handwritten digits upsampled to 16x16, captioned "
                                    "(\"a handwritten 3\"), for contrastive image-text training"),
    "clip_shapes": dict(category="image_text", fields=("image", "shape", "colour", "position",
                                                      "count"), **GENERATED,
                        description="drawn shapes (square circle cross; 4 colours; left right "
                                    "top bottom; one to three) with captions"),
    "lavender_qa": dict(category="qa", fields=("video", "question", "answer"), **GENERATED,
                        description="4-frame videos of a moving shape or digit: colour, object "
                                    "and direction questions, one-token answers"),
    "lavender_retrieval": dict(category="video_text", fields=("video", "caption", "match"),
                               **GENERATED,
                               description="does the caption match the video (true / false); "
                                           "each video with its caption and with one "
                                           "attribute changed"),
    "lavender_caption": dict(category="video_text", fields=("video", "caption"), **GENERATED,
                             description="caption a 4-frame video (\"a red square moves "
                                         "left\")"),
}


def register_card(name: str) -> None:
    """The task's TaskInfo card (`t5mtl tasks show NAME --card`)."""
    task_info.register_task_info(task_info.TaskInfo(
        name=name, schema="text_to_text", splits=tuple(SPLITS), suite="vision",
        **CARDS[name]), overwrite=True)


def register_task(name: str, vocabulary: seqio.Vocabulary | None = None,
                  overwrite: bool = False, seed: int = 0) -> str:
    """Registers one of TASKS (a no-op if it exists, unless `overwrite`);
    the arrays are made when a split is first read."""
    pixel_feature(name)
    if name in seqio.TaskRegistry.names():
        if not overwrite:
            return name
        seqio.TaskRegistry.remove(name)
    vocab = vocabulary or get_vocabulary("wordpiece_en")

    data_seed = seed

    def dataset_fn(split, shuffle_files=False, seed=None):
        return _dataset(name, split, data_seed, shuffle_files, seed)

    seqio.TaskRegistry.add(
        name, source=seqio.FunctionDataSource(dataset_fn, splits=tuple(SPLITS)),
        preprocessors=[tokenize_text], output_features=output_features(name, vocab),
        metric_fns=[], shuffle_buffer_size=SHUFFLE_BUFFER)
    register_card(name)
    return name


def register_mixture(name: str, vocabulary: seqio.Vocabulary | None = None,
                     overwrite: bool = False, seed: int = 0) -> str:
    """Registers a mixture of MIXTURES (equal rates) and its tasks."""
    if name not in MIXTURES:
        raise T5mtlError(f"unknown vision mixture {name!r}; choose one of {tuple(MIXTURES)}")
    for task in MIXTURES[name]:
        register_task(task, vocabulary, overwrite, seed)
    if name in seqio.MixtureRegistry.names():
        if not overwrite:
            return name
        seqio.MixtureRegistry.remove(name)
    seqio.MixtureRegistry.add(name, list(MIXTURES[name]), default_rate=1.0)
    return name


def register(vocabulary: seqio.Vocabulary | None = None, overwrite: bool = False,
             seed: int = 0) -> None:
    """Registers every vision task and both mixtures."""
    for name in MIXTURES:
        register_mixture(name, vocabulary, overwrite, seed)


def unregister() -> None:
    """Removes the vision tasks and mixtures (no error if absent)."""
    for name in MIXTURES:
        seqio.MixtureRegistry.remove(name)
    for name in TASKS:
        seqio.TaskRegistry.remove(name)
        task_info.remove_task_info(name)


@gin.configurable
def register_vision_task(name: str = "clip_pretrain") -> str:
    """Registers a vision task or mixture by name and returns the name."""
    return register_mixture(name) if name in MIXTURES else register_task(name)


@gin.configurable
def register_clip_pretrain() -> str:
    """Registers clip_digits, clip_shapes and clip_pretrain; returns "clip_pretrain"."""
    return register_mixture("clip_pretrain")


@gin.configurable
def register_lavender_mtl() -> str:
    """Registers the LAVENDER tasks and lavender_mtl; returns "lavender_mtl"."""
    return register_mixture("lavender_mtl")
