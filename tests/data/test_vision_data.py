"""Vision data: the numpy generators (t5mtl.data.vision_data) and their seqio
tasks (t5mtl.data.vision_tasks)."""
import collections

import numpy as np
import pytest
import seqio
from scipy import ndimage

from t5mtl.data import task_info
from t5mtl.data import vision_data as vd
from t5mtl.data import vision_tasks as vt
from t5mtl.data.vocab import get_vocabulary
from t5mtl.errors import T5mtlError

EIGHT = np.ones((3, 3), int)        # 8-connectivity: a cross's corners touch its middle


# ----------------------------------------------------------------------------
# Digits
# ----------------------------------------------------------------------------

def test_digits_pixels_are_the_8x8_values_over_16_upsampled_grey():
    images, labels = vd.digits_images()
    assert images.shape == (1797, 16, 16, 3) and images.dtype == np.float32
    assert labels[:3].tolist() == [0, 1, 2]
    # sklearn's first digit (a 0) starts with rows [0 0 5 13 9 1 0 0], [0 0 13 15 10 15 5 0]
    np.testing.assert_array_equal(images[0, 0:2, 4:6], np.full((2, 2, 3), 5 / 16))
    np.testing.assert_array_equal(images[0, 0:2, 6:8], np.full((2, 2, 3), 13 / 16))
    np.testing.assert_array_equal(images[0, 2:4, 10:12], np.full((2, 2, 3), 15 / 16))
    assert images[0, 0, 0].tolist() == [0, 0, 0] and images[0, 3, 12].tolist() == [5 / 16] * 3
    # the second (a 1): row 1 is [0 0 0 11 16 9 0 0]
    assert images[1, 2, 8, 1] == 1.0 and images[1, 3, 6, 2] == 11 / 16
    assert images.min() == 0.0 and images.max() == 1.0


def test_digits_split_is_a_fixed_stratified_partition():
    train_x, train_y = vd.digits_split("train")
    test_x, test_y = vd.digits_split("test")
    assert train_x.shape == (1397, 16, 16, 3) and test_x.shape == (400, 16, 16, 3)
    tr, te = vd.digits_split_indices("train"), vd.digits_split_indices("test")
    assert len(set(tr) | set(te)) == 1797 and not set(tr) & set(te)
    _, labels = vd.digits_images()
    total = np.bincount(labels, minlength=10)
    expected = 400 * total / 1797                  # stratified: each class's share
    assert np.all(np.abs(np.bincount(test_y, minlength=10) - expected) < 1)
    np.testing.assert_array_equal(train_y, labels[tr])
    np.testing.assert_array_equal(vd.digits_split("test")[1], test_y)        # fixed
    assert not np.array_equal(vd.digits_split_indices("test", seed=1), te)
    with pytest.raises(T5mtlError, match="unknown split 'dev'"):
        vd.digits_split("dev")


def test_digit_captions_name_the_label():
    assert vd.digit_caption(3) == "a handwritten 3"
    assert vd.digit_caption(7, 1) == "the digit 7"
    caps = vd.digit_captions([0, 5, 9, 9] * 50, seed=0)
    assert all(c.split()[-1] == str(y) for c, y in zip(caps, [0, 5, 9, 9] * 50))
    assert {c.rsplit(" ", 1)[0] for c in caps} == {t.rsplit(" ", 1)[0]
                                                   for t in vd.DIGIT_TEMPLATES}
    with pytest.raises(T5mtlError, match="0..9, got 10"):
        vd.digit_caption(10)


# ----------------------------------------------------------------------------
# Shapes
# ----------------------------------------------------------------------------

def test_draw_glyph_paints_hand_checked_pixels():
    img = np.zeros(vd.IMAGE_SHAPE, np.float32)
    vd.draw_glyph(img, "circle", "red", 2, 3)
    assert img[2, 3].tolist() == [0, 0, 0]          # a circle's corner is empty
    assert img[2, 4].tolist() == [1, 0, 0] and img[3, 3].tolist() == [1, 0, 0]
    assert img.sum() == 12
    vd.draw_glyph(img, "cross", "yellow", 10, 10)
    assert img[10, 10].tolist() == [1, 1, 0] and img[10, 11].tolist() == [0, 0, 0]
    assert img[13, 13].tolist() == [1, 1, 0] and img[12, 12].tolist() == [1, 1, 0]
    big = vd.draw_glyph(np.zeros((16, 16, 3), np.float32), "square", "blue", 8, 0, scale=2)
    assert big[8:16, 0:8, 2].sum() == 64 and big.sum() == 64
    with pytest.raises(T5mtlError, match="leaves the 16x16 canvas"):
        vd.draw_glyph(img, "square", "red", 13, 0)
    with pytest.raises(T5mtlError, match="unknown colour 'purple'"):
        vd.draw_glyph(img, "square", "purple", 0, 0)


def _glyphs_in(image):
    """(colours, shapes, boxes) of an image's drawn glyphs."""
    mask = image.max(-1) > 0
    comps, n = ndimage.label(mask, structure=EIGHT)
    colours, shapes, boxes = set(), [], []
    for sl in ndimage.find_objects(comps):
        crop = mask[sl].astype(np.float32)
        shapes.append(next((s for s, g in vd.GLYPHS.items()
                            if g.shape == crop.shape and np.array_equal(g, crop)), None))
        boxes.append(sl)
        colours |= {tuple(p) for p in image[sl][mask[sl]]}
    return colours, shapes, boxes


def test_shapes_images_match_their_captions():
    images, records = vd.shapes_split("test")
    assert images.shape == (288, 16, 16, 3) and images.dtype == np.float32
    for image, r in zip(images, records):
        colours, shapes, boxes = _glyphs_in(image)
        assert colours == {vd.COLOURS[r.colour]}
        assert shapes == [r.shape] * r.number
        half = {"left": (slice(None), slice(0, 8)), "right": (slice(None), slice(8, 16)),
                "top": (slice(0, 8), slice(None)), "bottom": (slice(8, 16), slice(None))}
        inside = np.zeros((16, 16), bool)
        inside[half[r.position]] = True
        assert np.all(inside[image.max(-1) > 0])
        assert r.caption.split()[:2] == [r.count, r.colour] and r.position in r.caption
    r = vd.ShapeRecord("circle", "blue", "top", "two")
    assert r.caption == "two blue circles at the top"
    assert vd.ShapeRecord("cross", "red", "left", "one").caption == "one red cross on the left"
    assert vd.ShapeRecord("cross", "red", "left", "three").caption == \
        "three red crosses on the left"


def test_shapes_split_balances_every_combination():
    train_x, train_r = vd.shapes_split("train")
    assert train_x.shape == (1440, 16, 16, 3)
    counts = collections.Counter(train_r)
    assert len(counts) == 3 * 4 * 4 * 3 and set(counts.values()) == {10}
    assert set(collections.Counter(vd.shapes_split("test")[1]).values()) == {2}
    again_x, again_r = vd.shapes_split("train")
    np.testing.assert_array_equal(again_x, train_x)
    assert again_r == train_r
    assert not np.array_equal(vd.shapes_split("train", seed=1)[0], train_x)


# ----------------------------------------------------------------------------
# Videos
# ----------------------------------------------------------------------------

SHIFT = {"left": (0, -2), "right": (0, 2), "up": (-2, 0), "down": (2, 0)}


def test_videos_move_their_object_two_pixels_a_frame():
    videos, records = vd.video_split("test")
    assert videos.shape == (416, 4, 16, 16, 3) and videos.dtype == np.float32
    digits, labels = vd.digits_images()
    test_digits = set(vd.digits_split_indices("test"))
    for video, r in zip(videos, records):
        dy, dx = SHIFT[r.direction]
        for t in range(3):
            np.testing.assert_array_equal(np.roll(video[t], (dy, dx), axis=(0, 1)), video[t + 1])
        lit = video[0].max(-1) > 0
        colour = np.asarray(vd.COLOURS[r.colour], np.float32)
        np.testing.assert_array_equal(video[0][lit] / video[0][lit].max(-1, keepdims=True),
                                      np.broadcast_to(colour, video[0][lit].shape))
        if r.obj in vd.SHAPES:
            crop = lit[ndimage.find_objects(lit.astype(int))[0]]
            np.testing.assert_array_equal(crop, np.kron(vd.GLYPHS[r.obj], np.ones((2, 2))))
            assert r.digit_index == -1
        else:
            assert labels[r.digit_index] == int(r.obj) and r.digit_index in test_digits
            # the 8x8 digit's intensities, in the colour's channels
            assert np.isclose(video[0].max(-1).sum(), digits[r.digit_index, ::2, ::2, 0].sum())


def test_video_split_counts_captions_and_qa():
    _, records = vd.video_split("train")
    assert len(records) == 1664
    counts = collections.Counter((r.obj, r.colour, r.direction) for r in records)
    assert len(counts) == 13 * 4 * 4 and set(counts.values()) == {8}
    r = vd.VideoRecord("square", "red", "left")
    assert r.caption == "a red square moves left"
    assert r.qa == (("what colour is it?", "red"), ("what is moving?", "square"),
                    ("which way does it move?", "left"))
    vocab = get_vocabulary("wordpiece_en")
    words = set(vd.COLOURS) | set(vd.VIDEO_OBJECTS) | set(vd.DIRECTIONS) | set(vd.SHAPES) \
        | set(vd.POSITIONS) | set(vd.COUNTS) | {"true", "false"}
    for w in words:
        assert len(vocab.encode(w)) == 1, w


def test_retrieval_pairs_give_every_video_its_caption_and_a_one_word_negative():
    # Both labels for every video: a video alone cannot tell true from false.
    _, records = vd.video_split("test")
    pairs = vd.retrieval_pairs(records)
    assert len(pairs) == 2 * len(records) == 832
    assert [i for i, _, _ in pairs] == [i for i in range(len(records)) for _ in range(2)]
    for i, caption, match in pairs:
        r = records[i]
        if match:
            assert caption == r.caption
        else:
            diff = [(a, b) for a, b in zip(caption.split(), r.caption.split()) if a != b]
            assert len(diff) == 1 and caption != r.caption
    assert sum(m for _, _, m in pairs) == len(records)
    assert vd.retrieval_pairs(records) == pairs


# ----------------------------------------------------------------------------
# seqio tasks
# ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def registered():
    vt.register()
    yield
    vt.unregister()


def _examples(name, split="validation", lengths=None):
    task = seqio.get_mixture_or_task(name)
    ds = task.get_dataset(lengths or {"inputs": 16, "targets": 16}, split=split,
                          shuffle=False, num_epochs=1)
    return list(ds.as_numpy_iterator())


@pytest.mark.parametrize("name,n,shape", [
    ("clip_digits", 400, (16, 16, 3)), ("clip_shapes", 288, (16, 16, 3)),
    ("lavender_qa", 1248, (4, 16, 16, 3)), ("lavender_retrieval", 832, (4, 16, 16, 3)),
    ("lavender_caption", 416, (4, 16, 16, 3))])
def test_tasks_yield_float_pixels_and_the_generators_text(registered, name, n, shape):
    vocab = get_vocabulary("wordpiece_en")
    examples = _examples(name)
    pixels, records, texts = vt.task_arrays(name, "validation")
    assert len(examples) == len(texts) == len(pixels) == n
    feature = vt.pixel_feature(name)
    for ex in examples[:50] + examples[-10:]:
        i = ex["index"]
        assert ex[feature].dtype == np.float32 and ex[feature].shape == shape
        np.testing.assert_array_equal(ex[feature], pixels[i])
        assert ex["targets_pretokenized"].decode() == texts[i][1]
        assert ex["targets"].dtype == np.int32
        assert ex["targets"].tolist() == vocab.encode(texts[i][1])
        if name.startswith("lavender"):
            assert ex["inputs_pretokenized"].decode() == texts[i][0]
            assert ex["inputs"].tolist() == vocab.encode(texts[i][0])
        else:
            assert "inputs" not in ex
    assert [ex["index"] for ex in examples] == list(range(n))


def test_task_texts_follow_the_records(registered):
    _, labels, texts = vt.task_arrays("clip_digits", "train")
    assert len(labels) == 1397
    assert all(t.split()[-1] == str(y) for y, (_, t) in zip(labels, texts))
    assert len({t.rsplit(" ", 1)[0] for _, t in texts}) == len(vd.DIGIT_TEMPLATES)
    _, records, texts = vt.task_arrays("lavender_qa", "validation")
    assert collections.Counter(q for q, _ in texts) == {q: 416 for q in vd.QUESTIONS.values()}
    assert all(a == r.answers[k] for r, (q, a) in zip(records, texts)
               for k, qq in vd.QUESTIONS.items() if q == qq)
    videos, records, texts = vt.task_arrays("lavender_retrieval", "train")
    assert collections.Counter(t for _, t in texts) == {"true": 1664, "false": 1664}
    assert len(videos) == len(records) == len(texts) == 3328
    assert all((c == r.caption) == (t == "true") for r, (c, t) in zip(records, texts))
    _, records, texts = vt.task_arrays("lavender_caption", "train")
    assert texts[:3] == [("", r.caption) for r in records[:3]]


def test_mixtures_mix_their_tasks_at_equal_rates(registered):
    for name, tasks in vt.MIXTURES.items():
        mix = seqio.get_mixture_or_task(name)
        assert sorted(t.name for t in mix.tasks) == sorted(tasks)
        assert {mix.get_rate(t) for t in mix.tasks} == {1.0}
    assert vt.register_clip_pretrain() == "clip_pretrain"
    assert vt.register_lavender_mtl() == "lavender_mtl"
    assert vt.register_vision_task("lavender_qa") == "lavender_qa"
    with pytest.raises(T5mtlError, match="unknown vision task 'clip_video'"):
        vt.register_vision_task("clip_video")


def test_tasks_have_complete_cards_until_unregistered(registered):
    for name in vt.TASKS:
        info = task_info.get_task_info(name)
        assert task_info.missing_card_fields(info) == [] and info.homepage, name
        assert info.schema == "text_to_text" and info.splits == ("train", "validation")
    assert task_info.get_task_info("clip_digits").source == "sklearn.datasets.load_digits"
    assert task_info.get_task_info("lavender_qa").category == "qa"
    vt.unregister()
    assert not any(task_info.has_task_info(n) or n in seqio.TaskRegistry.names()
                   for n in vt.TASKS)
    assert "lavender_mtl" not in seqio.MixtureRegistry.names()
    vt.register()
