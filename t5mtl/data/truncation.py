"""How many examples of a task seqio cuts to the feature lengths.

seqio's `append_eos_after_trim` trims "inputs" and "targets" to the sequence
length without a word; an MRPC pair does not fit 64 bytes, and a model
trained on cut inputs learns from half the evidence. `count_truncated`
counts, over the first examples of a split, those whose tokenized text plus
EOS is longer than the length; `t5mtl tasks show` prints it and `t5mtl
train` logs it per task at start, with a warning above WARN_FRACTION.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Mapping

import seqio

log = logging.getLogger(__name__)

WARN_FRACTION = 0.01          # warn when more than 1% of the checked examples are cut
FEATURES = ("inputs", "targets")


@dataclasses.dataclass(frozen=True)
class Truncation:
    task: str
    split: str
    checked: int                      # examples looked at
    lengths: Mapping[str, int]        # the feature lengths checked against
    truncated: Mapping[str, int]      # feature -> examples longer than its length
    longest: Mapping[str, int]        # feature -> longest tokenized length + EOS seen

    def fraction(self, feature: str) -> float:
        return self.truncated.get(feature, 0) / self.checked if self.checked else 0.0

    def describe(self) -> str:
        parts = [f"{self.truncated.get(f, 0)} of {self.checked} {f} longer than {self.lengths[f]} "
                 f"tokens ({100 * self.fraction(f):.1f}%, longest {self.longest.get(f, 0)})"
                 for f in FEATURES if f in self.lengths]
        return f"{self.task} ({self.split}): " + "; ".join(parts)


def count_truncated(task: seqio.Task, split: str, lengths: Mapping[str, int],
                    max_examples: int = 1000) -> Truncation:
    """Counts examples among the first `max_examples` of `split` whose
    "inputs"/"targets" (tokenized, with EOS) exceed `lengths`.

    Preprocessors see the real lengths (few-shot exemplars are pruned to
    fit as in training); the text each feature was tokenized from
    ("<feature>_pretokenized") is encoded again in full, so the count is
    what trimming removed. Features without that text (span corruption
    builds ids that fit) are not counted.
    """
    checked = 0
    truncated = {f: 0 for f in FEATURES if f in lengths}
    longest = {f: 0 for f in truncated}
    counted = set()
    for ex in _texts(task, split, lengths, max_examples):
        checked += 1
        for f in truncated:
            text = ex.get(f"{f}_pretokenized")
            if text is None:
                continue
            counted.add(f)
            vocab = task.output_features[f].vocabulary
            n = len(vocab.encode(text.decode("utf-8") if isinstance(text, bytes) else text))
            n += 1 if task.output_features[f].add_eos else 0
            longest[f] = max(longest[f], n)
            if n > lengths[f]:
                truncated[f] += 1
    return Truncation(task.name, split, checked, dict(lengths),
                      {f: truncated[f] for f in counted}, {f: longest[f] for f in counted})


def _texts(task: seqio.Task, split: str, lengths: Mapping[str, int], n: int):
    """The first n examples' "<feature>_pretokenized" texts. A Python source
    formatted by one template (file tasks, the synthetic suite) is rendered in
    Python, without building a tf.data pipeline; anything else goes through
    the task's own dataset."""
    import itertools

    from t5mtl.data import files
    steps = [getattr(p, "func", p) for p in task.preprocessors]
    tail = {seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim,
            seqio.preprocessors.append_eos}
    if (isinstance(task.source, files.PythonSource) and steps and steps[0] is files.apply_template
            and set(steps[1:]) <= tail):
        template = task.preprocessors[0].keywords["template"]
        for ex in itertools.islice(task.source.iter_examples(split), n):
            text = template.render(ex)
            yield {f"{k}_pretokenized": v for k, v in text.items()}
        return
    ds = task.get_dataset(dict(lengths), split=split, shuffle=False, num_epochs=1,
                          use_cached=False)
    yield from ds.take(n).as_numpy_iterator()


def log_truncation(mixture_or_task: str, lengths: Mapping[str, int], split: str = "train",
                   max_examples: int = 200) -> list[Truncation]:
    """Logs each task's truncation count (a warning above WARN_FRACTION)."""
    tasks = seqio.get_subtasks(seqio.get_mixture_or_task(mixture_or_task))
    out = []
    for task in tasks:
        if split not in task.splits:
            continue
        t = count_truncated(task, split, lengths, max_examples)
        out.append(t)
        worst = max((t.fraction(f) for f in t.truncated), default=0.0)
        if worst > WARN_FRACTION:
            log.warning("truncated examples: %s; raise DataConfig.task_feature_lengths to keep "
                        "them whole", t.describe())
        else:
            log.info("truncated examples: %s", t.describe())
    return out
