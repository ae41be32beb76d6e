"""ImageTextFeatureConverter: float pixels and text tokens through the
project's batch path (data/batches.host_batches, then the trainer's
partitioning.host_batch_to_global), and its errors on bad pixels."""
import itertools
import re

import numpy as np
import pytest
import seqio
import tensorflow as tf

from t5mtl.data import vision_data as vd
from t5mtl.data import vision_tasks as vt
from t5mtl.data.batches import host_batches
from t5mtl.data.vision_features import ImageTextFeatureConverter
from t5mtl.data.vocab import get_vocabulary
from t5mtl.errors import T5mtlError

ONE_HOST = seqio.ShardInfo(0, 1)


@pytest.fixture(scope="module", autouse=True)
def registered():
    vt.register()
    yield
    vt.unregister()


def _batches(name, lengths, n=1, converter=None, **kw):
    kw = {"split": "validation", "batch_size_per_host": 4, "shuffle": False, "seed": 0,
          "pack": False, "shard_info": ONE_HOST, **kw}
    it = host_batches(name, lengths, feature_converter=converter or ImageTextFeatureConverter(),
                      **kw)
    return list(itertools.islice(it, n))


def _padded(texts, length):
    vocab = get_vocabulary("wordpiece_en")
    out = np.zeros((len(texts), length), np.int32)
    for i, t in enumerate(texts):
        ids = vocab.encode(t)[:length]
        out[i, :len(ids)] = ids
    return out


def test_clip_batches_keep_float_pixels_and_pad_the_caption_ids():
    b1, b2 = _batches("clip_digits", {"inputs": 64, "targets": 8}, n=2)
    pixels, labels, texts = vt.task_arrays("clip_digits", "validation")
    assert set(b1) == {"image", "text_tokens"}
    assert b1["image"].dtype == np.float32 and b1["image"].shape == (4, 16, 16, 3)
    assert b1["text_tokens"].dtype == np.int32 and b1["text_tokens"].shape == (4, 8)
    # unshuffled: the split's first rows, every pixel exact (fractions of 16 survive)
    np.testing.assert_array_equal(b1["image"], pixels[:4])
    np.testing.assert_array_equal(b2["image"], pixels[4:8])
    assert np.any((b1["image"] > 0) & (b1["image"] < 1))
    assert set(np.unique(b1["image"] * 16)) <= set(range(17))
    np.testing.assert_array_equal(b1["text_tokens"], _padded([t for _, t in texts[:4]], 8))
    # the caption's last token is the digit's numeral
    vocab = get_vocabulary("wordpiece_en")
    last = [row[row > 0][-1] for row in b1["text_tokens"]]
    assert [vocab.decode([int(t)]) for t in last] == [str(y) for y in labels[:4]]


def test_long_captions_are_cut_to_the_targets_length():
    (b,) = _batches("clip_shapes", {"targets": 3})
    _, _, texts = vt.task_arrays("clip_shapes", "validation")
    np.testing.assert_array_equal(b["text_tokens"], _padded([t for _, t in texts[:4]], 3))
    assert np.all(b["text_tokens"] > 0)


def test_video_batches_through_the_trainers_global_arrays():
    from t5mtl.train import partitioning
    (b,) = _batches("lavender_caption", {"inputs": 4, "targets": 8},
                    converter=ImageTextFeatureConverter("video"))
    videos, records, _ = vt.task_arrays("lavender_caption", "validation")
    assert b["video"].dtype == np.float32 and b["video"].shape == (4, 4, 16, 16, 3)
    np.testing.assert_array_equal(b["video"], videos[:4])
    np.testing.assert_array_equal(b["text_tokens"], _padded([r.caption for r in records[:4]], 8))
    mesh = partitioning.create_mesh((-1, 1, 1))
    g = partitioning.host_batch_to_global(b, mesh)
    assert g["video"].dtype == np.float32 and g["video"].shape == (4, 4, 16, 16, 3)
    np.testing.assert_array_equal(np.asarray(g["video"]), videos[:4])
    assert g["text_tokens"].dtype == np.int32


def test_the_clip_mixture_yields_both_tasks_shuffled_and_seeded():
    a = _batches("clip_pretrain", {"targets": 12}, n=4, split="train", shuffle=True,
                 batch_size_per_host=8)
    again = _batches("clip_pretrain", {"targets": 12}, n=4, split="train", shuffle=True,
                     batch_size_per_host=8)
    for x, y in zip(a, again):
        np.testing.assert_array_equal(x["image"], y["image"])
    vocab = get_vocabulary("wordpiece_en")
    captions = [vocab.decode([int(t) for t in row if t]) for b in a for row in b["text_tokens"]]
    digits = [c for c in captions if c.split()[-1] in vd.DIGIT_NAMES]
    shapes = [c for c in captions if c.split()[-1] in vd.POSITIONS]
    assert digits and shapes and len(digits) + len(shapes) == 32
    images = np.concatenate([b["image"] for b in a])
    grey = np.all(images[..., :1] == images, axis=(1, 2, 3))      # digits are grey
    assert grey.tolist() == [c in digits for c in captions]


def _dataset(pixels, spec=None):
    n = len(pixels)
    sig = {"image": spec or tf.TensorSpec(np.shape(pixels)[1:], tf.as_dtype(pixels.dtype)),
           "targets": tf.TensorSpec([None], tf.int32)}
    return tf.data.Dataset.from_generator(
        lambda: ({"image": pixels[i], "targets": np.array([5, 6], np.int32)} for i in range(n)),
        output_signature=sig)


@pytest.mark.parametrize("pixels,got", [
    (np.zeros((2, 16, 16, 3), np.int32), "got int32 [16, 16, 3]"),
    (np.zeros((2, 16, 16, 3), np.float64), "got float64 [16, 16, 3]"),
    (np.zeros((2, 8, 8, 3), np.float32), "got float32 [8, 8, 3]"),
    (np.zeros((2, 16, 16), np.float32), "got float32 [16, 16]"),
    (np.zeros((2, 4, 16, 16, 3), np.float32), "got float32 [4, 16, 16, 3]"),
])
def test_bad_pixels_are_one_error_naming_the_feature(pixels, got):
    conv = ImageTextFeatureConverter()
    with pytest.raises(T5mtlError, match=r"^feature 'image': expected float32 pixels "
                                         r"\[16, 16, 3\], " + re.escape(got) + "$"):
        conv(_dataset(pixels), {"targets": 4})


def test_unknown_dimensions_are_checked_per_example():
    conv = ImageTextFeatureConverter()
    good = _dataset(np.full((2, 16, 16, 3), 0.5, np.float32),
                    tf.TensorSpec([None, None, 3], tf.float32))
    out = list(conv(good, {"targets": 4}).as_numpy_iterator())
    assert out[0]["image"].shape == (16, 16, 3) and out[0]["text_tokens"].tolist() == [5, 6, 0, 0]
    bad = _dataset(np.zeros((2, 8, 8, 3), np.float32), tf.TensorSpec([None, None, 3], tf.float32))
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"feature \\?'image\\?': expected float32 pixels \[16, 16, 3\]"):
        list(conv(bad, {"targets": 4}).as_numpy_iterator())


def test_converter_arguments_and_lengths_are_checked():
    with pytest.raises(T5mtlError, match="set DataConfig.pack = False"):
        ImageTextFeatureConverter(pack=True)
    with pytest.raises(T5mtlError, match="feature 'frames': give image_shape"):
        ImageTextFeatureConverter("frames")
    assert ImageTextFeatureConverter("frames", (2, 8, 8, 1)).image_shape == (2, 8, 8, 1)
    assert ImageTextFeatureConverter("video").get_model_feature_lengths({"targets": 7}) == {
        "video": 4, "text_tokens": 7}
    with pytest.raises(T5mtlError, match="needs a 'targets' length"):
        _batches("clip_digits", {"inputs": 8})
    with pytest.raises(T5mtlError, match=r"feature 'video': missing from the task's examples"):
        _batches("clip_digits", {"targets": 8}, converter=ImageTextFeatureConverter("video"))


def test_hosts_read_disjoint_shards_of_the_seeded_shuffle():
    pixels, _, _ = vt.task_arrays("clip_digits", "train")
    row = {p.tobytes(): i for i, p in enumerate(pixels)}
    seen = []
    for host in range(2):
        batches = _batches("clip_digits", {"targets": 8}, n=3, split="train", shuffle=True,
                           shard_info=seqio.ShardInfo(host, 2))
        seen.append([row[p.tobytes()] for b in batches for p in b["image"]])
    assert len(set(seen[0])) == len(set(seen[1])) == 12
    assert not set(seen[0]) & set(seen[1])
    assert seen[0] != sorted(seen[0])                        # shuffled
    (first,) = _batches("clip_digits", {"targets": 8}, split="validation",
                        shard_info=seqio.ShardInfo(1, 2))   # unshuffled: every other row
    np.testing.assert_array_equal(first["image"], vt.task_arrays("clip_digits")[0][1:8:2])
