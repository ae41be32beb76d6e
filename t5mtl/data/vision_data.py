"""Small image and video data sets in numpy: digits, drawn shapes, moving objects.

Every image is float32 [16, 16, 3] in [0, 1] (`IMAGE_SHAPE`), a video
float32 [4, 16, 16, 3] (`VIDEO_SHAPE`); the background is 0. Every word an
attribute takes (colours, shapes, positions, counts, directions, the
numerals "0".."9", "true"/"false") is one token of the shipped wordpiece_en
vocabulary. Everything is seeded: the same arguments give the same arrays.

    digits_images() -> (images [1797, 16, 16, 3], labels int64 [1797])
        sklearn's load_digits (8x8, values 0..16) / 16, upsampled 2x
        (nearest), grey in 3 channels
    digits_split(split="train"|"test", seed=0) -> (images, labels)
        stratified: train 1,397, test 400
    digit_caption(label, template=0) -> str      DIGIT_TEMPLATES[template]
    digit_captions(labels, seed=0) -> list[str]  one seeded template per label

    draw_glyph(canvas, shape, colour, row, col, scale=1) -> canvas
        paints a 4x4 GLYPHS[shape] (times `scale`) at (row, col), in place
    shapes_split(split="train"|"test", seed=0) -> (images [n, 16, 16, 3],
        records list[ShapeRecord])
        every shape x colour x position x count (144 combinations) equally
        often: train 1,440 (10 each), test 288 (2 each), shuffled
    ShapeRecord(shape, colour, position, count).caption
        e.g. "two blue circles at the top"

    video_split(split="train"|"test", seed=0) -> (videos [n, 4, 16, 16, 3],
        records list[VideoRecord])
        one 8x8 object (a 4x4 shape glyph scaled 2x, or an 8x8 digit of the
        matching digits split) in one colour, moving 2 pixels a frame;
        every object x colour x direction (13 x 4 x 4 = 208) equally often:
        train 1,664 (8 each), test 416 (2 each), shuffled
    VideoRecord(obj, colour, direction, digit_index).caption  "a red square moves left"
    VideoRecord.qa -> ((question, answer), ...)     QUESTIONS: colour, object, direction
    negative_caption(record, rng) -> str   the caption with one attribute changed
    retrieval_pairs(records, seed=0) -> list[(video index, caption, bool)]
        every video twice: its caption (true) and a negative_caption (false)
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np

from t5mtl.errors import T5mtlError

IMAGE_SIZE = 16
NUM_FRAMES = 4
IMAGE_SHAPE = (IMAGE_SIZE, IMAGE_SIZE, 3)
VIDEO_SHAPE = (NUM_FRAMES,) + IMAGE_SHAPE
SPLITS = ("train", "test")

DIGIT_NAMES = tuple(str(d) for d in range(10))
DIGITS_TEST_SIZE = 400
DIGIT_TEMPLATES = ("a handwritten {}", "the digit {}", "a picture of the number {}",
                   "a {}", "the number {}")

COLOURS = {"red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0),
           "yellow": (1.0, 1.0, 0.0)}
GLYPHS = {
    "square": np.ones((4, 4), np.float32),
    "circle": np.array([[0, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 1], [0, 1, 1, 0]], np.float32),
    "cross": np.array([[1, 0, 0, 1], [0, 1, 1, 0], [0, 1, 1, 0], [1, 0, 0, 1]], np.float32),
}
SHAPES = tuple(GLYPHS)
POSITIONS = ("left", "right", "top", "bottom")
COUNTS = ("one", "two", "three")
DIRECTIONS = ("left", "right", "up", "down")
VIDEO_OBJECTS = SHAPES + DIGIT_NAMES
QUESTIONS = {"colour": "what colour is it?", "object": "what is moving?",
             "direction": "which way does it move?"}
SHAPES_PER_COMBINATION = {"train": 10, "test": 2}
VIDEOS_PER_COMBINATION = {"train": 8, "test": 2}

# Shapes images: a half of the canvas holds up to three 4x4 glyphs, one per
# slot along its long side, at a random offset across it.
_SLOTS = (0, 6, 12)
_STEP = 2                  # pixels a video object moves per frame
_OBJECT = 8                # a video object's side


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise T5mtlError(f"unknown split {split!r}; choose one of {SPLITS}")


def _check_word(kind: str, value: str, allowed) -> None:
    if value not in allowed:
        raise T5mtlError(f"unknown {kind} {value!r}; choose one of {tuple(allowed)}")


# ----------------------------------------------------------------------------
# Digits
# ----------------------------------------------------------------------------

@functools.lru_cache(None)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # pylint: disable=import-outside-toplevel
    d = load_digits()
    return d.images.astype(np.float32) / 16.0, d.target.astype(np.int64)


def digits_images() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits as float32 [n, 16, 16, 3] in [0, 1] and int64 labels."""
    small, labels = _digits()
    big = np.repeat(np.repeat(small, 2, axis=1), 2, axis=2)
    return np.repeat(big[..., None], 3, axis=-1), labels.copy()


@functools.lru_cache(None)
def _digits_indices(seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split  # pylint: disable=import-outside-toplevel
    labels = _digits()[1]
    train, test = train_test_split(np.arange(len(labels)), test_size=DIGITS_TEST_SIZE,
                                   stratify=labels, random_state=seed)
    return np.sort(train), np.sort(test)


def digits_split_indices(split: str = "train", seed: int = 0) -> np.ndarray:
    """Indices into digits_images() of a split (sorted)."""
    _check_split(split)
    return _digits_indices(seed)[SPLITS.index(split)].copy()


def digits_split(split: str = "train", seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(images [n, 16, 16, 3], labels [n]) of a fixed stratified split of the
    digits: train 1,397, test 400 (the same per seed)."""
    idx = digits_split_indices(split, seed)
    images, labels = digits_images()
    return images[idx], labels[idx]


def digit_caption(label: int, template: int = 0) -> str:
    """A caption of digit `label` with DIGIT_TEMPLATES[template]."""
    if not 0 <= int(label) <= 9:
        raise T5mtlError(f"digit label must be 0..9, got {label}")
    return DIGIT_TEMPLATES[template].format(DIGIT_NAMES[int(label)])


def digit_captions(labels, seed: int = 0) -> list[str]:
    """One caption per label, each with a seeded random template."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(DIGIT_TEMPLATES), size=len(labels))
    return [digit_caption(int(y), int(t)) for y, t in zip(labels, picks)]


# ----------------------------------------------------------------------------
# Shapes
# ----------------------------------------------------------------------------

def draw_glyph(canvas: np.ndarray, shape: str, colour: str, row: int, col: int,
               scale: int = 1) -> np.ndarray:
    """Paints GLYPHS[shape] (scaled `scale` times, nearest) in COLOURS[colour]
    with its top-left corner at (row, col) of `canvas` [H, W, 3]; in place."""
    _check_word("shape", shape, GLYPHS)
    _check_word("colour", colour, COLOURS)
    glyph = np.kron(GLYPHS[shape], np.ones((scale, scale), np.float32))
    paint_mask(canvas, glyph, colour, row, col)
    return canvas


def paint_mask(canvas: np.ndarray, mask: np.ndarray, colour: str, row: int, col: int) -> None:
    """canvas[row:, col:] = max(canvas, mask * colour) over the mask's extent."""
    h, w = mask.shape
    if row < 0 or col < 0 or row + h > canvas.shape[0] or col + w > canvas.shape[1]:
        raise T5mtlError(f"a {h}x{w} mask at ({row}, {col}) leaves the "
                         f"{canvas.shape[0]}x{canvas.shape[1]} canvas")
    patch = mask[..., None] * np.asarray(COLOURS[colour], np.float32)
    region = canvas[row:row + h, col:col + w]
    np.maximum(region, patch, out=region)


@dataclasses.dataclass(frozen=True)
class ShapeRecord:
    shape: str
    colour: str
    position: str
    count: str

    @property
    def number(self) -> int:
        return COUNTS.index(self.count) + 1

    @property
    def caption(self) -> str:
        plural = "es" if self.shape.endswith("s") else "s"
        noun = self.shape + (plural if self.number > 1 else "")
        where = "on the" if self.position in ("left", "right") else "at the"
        return f"{self.count} {self.colour} {noun} {where} {self.position}"


def draw_shapes(record: ShapeRecord, rng: np.random.Generator) -> np.ndarray:
    """An image of `record`: its count of glyphs in distinct slots along the
    named half's long side, each at a random offset (0..4) across it."""
    image = np.zeros(IMAGE_SHAPE, np.float32)
    slots = np.sort(rng.choice(len(_SLOTS), size=record.number, replace=False))
    half = 0 if record.position in ("left", "top") else IMAGE_SIZE // 2
    for s in slots:
        along, across = _SLOTS[s], half + int(rng.integers(0, 5))
        row, col = ((along, across) if record.position in ("left", "right")
                    else (across, along))
        draw_glyph(image, record.shape, record.colour, row, col)
    return image


def shape_records() -> list[ShapeRecord]:
    """Every shape x colour x position x count, in a fixed order."""
    return [ShapeRecord(s, c, p, n) for s in SHAPES for c in COLOURS for p in POSITIONS
            for n in COUNTS]


@functools.lru_cache(8)
def _shapes(split: str, seed: int):
    rng = np.random.default_rng([seed, SPLITS.index(split), 1])
    records = shape_records() * SHAPES_PER_COMBINATION[split]
    records = [records[i] for i in rng.permutation(len(records))]
    images = np.stack([draw_shapes(r, rng) for r in records])
    return images, records


def shapes_split(split: str = "train", seed: int = 0) -> tuple[np.ndarray, list[ShapeRecord]]:
    """(images [n, 16, 16, 3], records): train 1,440, test 288, every
    combination equally often, shuffled; seeded per (split, seed)."""
    _check_split(split)
    images, records = _shapes(split, seed)
    return images.copy(), list(records)


# ----------------------------------------------------------------------------
# Videos
# ----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class VideoRecord:
    obj: str              # a shape name or a numeral
    colour: str
    direction: str
    digit_index: int = -1  # for a digit: its index into digits_images()

    @property
    def caption(self) -> str:
        return f"a {self.colour} {self.obj} moves {self.direction}"

    @property
    def answers(self) -> dict[str, str]:
        return {"colour": self.colour, "object": self.obj, "direction": self.direction}

    @property
    def qa(self) -> tuple[tuple[str, str], ...]:
        """(question, one-token answer) for each of QUESTIONS."""
        return tuple((QUESTIONS[k], self.answers[k]) for k in QUESTIONS)


def object_mask(record: VideoRecord) -> np.ndarray:
    """The object's 8x8 intensity in [0, 1]: a glyph scaled 2x, or the 8x8 digit."""
    if record.obj in GLYPHS:
        return np.kron(GLYPHS[record.obj], np.ones((2, 2), np.float32))
    if record.digit_index < 0:
        raise T5mtlError(f"video object {record.obj!r} needs a digit_index")
    return _digits()[0][record.digit_index]


def trajectory(direction: str, rng: np.random.Generator) -> list[tuple[int, int]]:
    """(row, col) of the object's top-left corner in each frame: moving
    _STEP pixels a frame in `direction`, starting at a random place from
    which it stays on the canvas."""
    _check_word("direction", direction, DIRECTIONS)
    span = IMAGE_SIZE - _OBJECT                      # corner positions 0..span
    travel = _STEP * (NUM_FRAMES - 1)
    start = int(rng.integers(0, span - travel + 1))   # along the motion, forward
    other = int(rng.integers(0, span + 1))
    sign = 1 if direction in ("right", "down") else -1
    first = start if sign > 0 else span - start
    along = [first + sign * _STEP * t for t in range(NUM_FRAMES)]
    if direction in ("left", "right"):
        return [(other, a) for a in along]
    return [(a, other) for a in along]


def draw_video(record: VideoRecord, path: list[tuple[int, int]]) -> np.ndarray:
    """A [4, 16, 16, 3] video of the record's object at `path`'s corners."""
    mask = object_mask(record)
    video = np.zeros(VIDEO_SHAPE, np.float32)
    for frame, (row, col) in zip(video, path):
        paint_mask(frame, mask, record.colour, row, col)
    return video


@functools.lru_cache(8)
def _videos(split: str, seed: int):
    rng = np.random.default_rng([seed, SPLITS.index(split), 2])
    combos = [(o, c, d) for o in VIDEO_OBJECTS for c in COLOURS for d in DIRECTIONS]
    combos = combos * VIDEOS_PER_COMBINATION[split]
    combos = [combos[i] for i in rng.permutation(len(combos))]
    idx = digits_split_indices(split, seed)
    labels = _digits()[1][idx]
    by_label = {d: idx[labels == d] for d in range(10)}
    records, videos = [], []
    for obj, colour, direction in combos:
        digit = int(rng.choice(by_label[int(obj)])) if obj in DIGIT_NAMES else -1
        r = VideoRecord(obj, colour, direction, digit)
        records.append(r)
        videos.append(draw_video(r, trajectory(direction, rng)))
    return np.stack(videos), records


def video_split(split: str = "train", seed: int = 0) -> tuple[np.ndarray, list[VideoRecord]]:
    """(videos [n, 4, 16, 16, 3], records): train 1,664, test 416; every
    object x colour x direction equally often, shuffled; a digit object is
    one of the digits split of the same name."""
    _check_split(split)
    videos, records = _videos(split, seed)
    return videos.copy(), list(records)


def negative_caption(record: VideoRecord, rng: np.random.Generator) -> str:
    """The record's caption with one attribute (colour, object or direction,
    chosen at random) replaced by another value of the same kind."""
    kind = ("colour", "object", "direction")[int(rng.integers(0, 3))]
    values = {"colour": tuple(COLOURS), "object": VIDEO_OBJECTS, "direction": DIRECTIONS}[kind]
    current = record.answers[kind]
    other = [v for v in values if v != current]
    new = other[int(rng.integers(0, len(other)))]
    field = {"colour": "colour", "object": "obj", "direction": "direction"}[kind]
    return dataclasses.replace(record, **{field: new}).caption


def retrieval_pairs(records: list[VideoRecord], seed: int = 0) -> list[tuple[int, str, bool]]:
    """(video index, caption, matches): every video twice, with its own
    caption (true) and with a negative_caption (false), in a seeded order per
    video. Both labels for each video: a model cannot answer from the video
    alone, it has to read the caption."""
    rng = np.random.default_rng([seed, 3])
    pairs = []
    for i, r in enumerate(records):
        both = [(i, r.caption, True), (i, negative_caption(r, rng), False)]
        pairs += both[::-1] if rng.integers(0, 2) else both
    return pairs
