"""WiC-, COPA- and MRPC-shaped files in their standard layouts, written in-test,
and the two documented ways of registering them (a Python module; a JSON spec)."""
import json
import os

# The labels of the validation files (MRPC: 7 of 10 positive, so the
# majority-class chance is 70.0, not 50.0).
MRPC_DEV_LABELS = [1, 1, 0, 1, 1, 0, 1, 1, 0, 1]
MRPC_BOM = "\ufeff"
MRPC_HEADER = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"

WORDS = ["bank", "bat", "light", "spring", "match", "ring", "rock", "seal"]
NOUNS = ["the river", "a teacher", "my sister", "the old farmer", "a small dog", "the captain"]
VERBS = ["saw", "found", "carried", "painted", "lost", "described"]


def _sentence(i: int, j: int) -> str:
    return (f"{NOUNS[(i + j) % len(NOUNS)].capitalize()} {VERBS[(i * 3 + j) % len(VERBS)]} "
            f"{NOUNS[(i * 5 + j + 1) % len(NOUNS)]} near the {WORDS[(i + 2 * j) % len(WORDS)]}.")


def wic_rows(n: int, offset: int):
    return [{"word": WORDS[i % len(WORDS)], "sentence1": _sentence(i + offset, 1),
             "sentence2": _sentence(i + offset, 2), "idx": i, "start1": 0, "end1": 4,
             "label": (i + offset) % 3 == 0} for i in range(n)]


def copa_rows(n: int, offset: int):
    return [{"premise": _sentence(i + offset, 0), "choice1": _sentence(i + offset, 3),
             "choice2": _sentence(i + offset, 4), "question": "cause" if i % 2 else "effect",
             "idx": i, "label": (i + offset) % 2} for i in range(n)]


def mrpc_rows(labels, offset: int):
    return [(q, 1000 + i, 2000 + i, _sentence(i + offset, 5), _sentence(i + offset, 6))
            for i, q in enumerate(labels)]


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)


def write_files(data_dir: str) -> dict:
    """Writes the files; returns {task: {split: rows}} as written."""
    out = {"wic": {"train": wic_rows(24, 0), "validation": wic_rows(10, 100)},
           "copa": {"train": copa_rows(24, 0), "validation": copa_rows(10, 100)},
           "mrpc": {"train": mrpc_rows([i % 3 != 0 for i in range(24)], 0),
                    "validation": mrpc_rows(MRPC_DEV_LABELS, 100)}}
    for task, name in (("wic", {"train": "train.jsonl", "validation": "val.jsonl"}),
                       ("copa", {"train": "train.jsonl", "validation": "val.jsonl"})):
        for split, filename in name.items():
            _write(os.path.join(data_dir, task, filename),
                   "".join(json.dumps(r) + "\n" for r in out[task][split]))
    for split, filename in (("train", "msr_paraphrase_train.txt"), ("validation", "dev.tsv")):
        lines = [MRPC_HEADER] + ["\t".join(str(int(c)) if isinstance(c, bool) else str(c)
                                           for c in row) for row in out["mrpc"][split]]
        _write(os.path.join(data_dir, "mrpc", filename), MRPC_BOM + "\r\n".join(lines) + "\r\n")
    return out


# The documented Python route (docs/tasks.md), as a user's module.
MODULE = '''\
from t5mtl.data.user_tasks import register_dataset_task

register_dataset_task(
    "{p}_wic", {{"train": "wic/train.jsonl", "validation": "wic/val.jsonl"}},
    inputs="wic word: {{word}} sentence1: {{sentence1}} sentence2: {{sentence2}}",
    targets="{{label}}", label_names=("different", "same"), label_values=(False, True),
    category="word_sense", description="is the word used in the same sense in both")
register_dataset_task(
    "{p}_copa", {{"train": "copa/train.jsonl", "validation": "copa/val.jsonl"}},
    inputs="copa premise: {{premise}} what was the {{question}}? "
           "choice1: {{choice1}} choice2: {{choice2}}",
    targets="{{label}}", label_names=("choice1", "choice2"), label_values=(0, 1),
    category="reasoning", description="the more plausible cause or effect")
register_dataset_task(
    "{p}_mrpc", {{"train": "mrpc/msr_paraphrase_train.txt", "validation": "mrpc/dev.tsv"}},
    format="tsv", inputs="mrpc sentence1: {{sentence1}} sentence2: {{sentence2}}",
    targets="{{label}}", label_names=("not_equivalent", "equivalent"), label_values=("0", "1"),
    columns={{"sentence1": "#1 String", "sentence2": "#2 String", "label": "Quality"}},
    metrics=("accuracy", "f1"), category="paraphrase", description="paraphrase or not")
'''


def write_module(directory: str, module: str = "my_tasks", prefix: str = "user") -> str:
    _write(os.path.join(directory, f"{module}.py"), MODULE.format(p=prefix))
    return module


def spec(prefix: str = "spec") -> dict:
    """The same three tasks (and a mixture with a built-in task) as a JSON spec."""
    return {
        "tasks": [
            {"name": f"{prefix}_wic", "files": {"train": "wic/train.jsonl",
                                                "validation": "wic/val.jsonl"},
             "inputs": "wic word: {word} sentence1: {sentence1} sentence2: {sentence2}",
             "targets": "{label}", "label_names": ["different", "same"],
             "label_values": [False, True], "category": "word_sense"},
            {"name": f"{prefix}_copa", "files": {"train": "copa/train.jsonl",
                                                 "validation": "copa/val.jsonl"},
             "inputs": "copa premise: {premise} what was the {question}? "
                       "choice1: {choice1} choice2: {choice2}",
             "targets": "{label}", "label_names": ["choice1", "choice2"],
             "label_values": [0, 1], "category": "reasoning"},
            {"name": f"{prefix}_mrpc", "format": "tsv",
             "files": {"train": "mrpc/msr_paraphrase_train.txt", "validation": "mrpc/dev.tsv"},
             "inputs": "mrpc sentence1: {sentence1} sentence2: {sentence2}",
             "targets": "{label}", "label_names": ["not_equivalent", "equivalent"],
             "label_values": ["0", "1"], "metrics": ["accuracy", "f1"],
             "columns": {"sentence1": "#1 String", "sentence2": "#2 String",
                         "label": "Quality"}, "category": "paraphrase"},
        ],
        "mixtures": [{"name": f"{prefix}_mix", "rate": "equal",
                      "tasks": [f"{prefix}_wic", f"{prefix}_copa", f"{prefix}_mrpc",
                                "synth_parity"]}],
    }


def write_spec(path: str, prefix: str = "spec") -> str:
    _write(path, json.dumps(spec(prefix), indent=1))
    return path
