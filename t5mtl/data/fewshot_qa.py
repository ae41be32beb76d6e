"""Few-shot QA over the passage corpus (Atlas's few-shot setting): SQuAD v1.1
dev questions, each with all its gold answers and its gold passage id in
t5mtl.data.passages' scheme ("squad/<article>/<paragraph>", file order),
split by article into a small train set and a test set.

    questions = squad_questions(data_dir)
    train, test = fewshot_split(questions, train_size=64, test_size=500, seed=0)

The split: the articles are shuffled by `seed`; the first
round(train_article_share x articles) (at least 1, at most all but one) are
train articles, the rest test articles. `train_size` questions are drawn
(without replacement, same seed) from the train articles' questions and
`test_size` from the test articles', so no article is in both and the train
questions are spread over many articles (SQuAD dev has 48 articles of 96 to
810 questions: cutting whole articles to 64 questions would leave one
article). Each set is returned in file order.

Exact match and F1 are t5mtl.data.metrics.squad's (`qa_scores`).
"""
from __future__ import annotations

import dataclasses
import json
from typing import Sequence

import numpy as np

from t5mtl.data import metrics
from t5mtl.data.data_dir import data_path
from t5mtl.data.passages import SQUAD_FILE
from t5mtl.errors import T5mtlError


@dataclasses.dataclass(frozen=True)
class QAExample:
    id: str                   # SQuAD's question id
    question: str
    answers: tuple[str, ...]  # every gold answer, as in the file (repeats kept)
    passage_id: str           # the gold paragraph, "squad/<article>/<paragraph>"

    @property
    def article(self) -> int:
        return int(self.passage_id.split("/")[1])


def squad_questions(data_dir: str | None = None) -> list[QAExample]:
    """Every SQuAD v1.1 dev question, in file order, with its gold passage id."""
    path = data_path(*SQUAD_FILE, data_dir=data_dir)
    with open(path, encoding="utf-8") as f:
        articles = json.load(f)["data"]
    return [QAExample(qa["id"], qa["question"], tuple(x["text"] for x in qa["answers"]),
                      f"squad/{a}/{p}")
            for a, article in enumerate(articles)
            for p, para in enumerate(article["paragraphs"])
            for qa in para["qas"]]


def fewshot_split(examples: Sequence[QAExample], train_size: int = 64, test_size: int = 500,
                  seed: int = 0, train_article_share: float = 0.5
                  ) -> tuple[list[QAExample], list[QAExample]]:
    """(train, test): disjoint by article, `train_size` and `test_size`
    questions, each in the input's order; the same arguments give the same
    split (numpy's default_rng(seed))."""
    if train_size < 1 or test_size < 1:
        raise T5mtlError(f"train_size and test_size must be at least 1, got {train_size}, "
                         f"{test_size}")
    if not 0.0 < train_article_share < 1.0:
        raise T5mtlError(f"train_article_share must be in (0, 1), got {train_article_share}")
    articles = sorted({e.article for e in examples})
    if len(articles) < 2:
        raise T5mtlError(f"a split by article needs at least 2 articles, got {len(articles)}")
    rng = np.random.default_rng(seed)
    order = [articles[i] for i in rng.permutation(len(articles))]
    n_train = min(max(1, round(train_article_share * len(articles))), len(articles) - 1)
    train_articles = set(order[:n_train])
    pools = ([i for i, e in enumerate(examples) if e.article in train_articles],
             [i for i, e in enumerate(examples) if e.article not in train_articles])
    out = []
    for name, pool, size in (("train", pools[0], train_size), ("test", pools[1], test_size)):
        if size > len(pool):
            raise T5mtlError(f"{name}_size {size} is more than the {len(pool)} questions of "
                             f"the {name} articles")
        chosen = sorted(rng.choice(len(pool), size=size, replace=False))
        out.append([examples[pool[i]] for i in chosen])
    return out[0], out[1]


def qa_scores(examples: Sequence[QAExample], predictions: Sequence[str]) -> dict[str, float]:
    """SQuAD exact match and F1 in percent (t5mtl.data.metrics.squad), best
    over each example's gold answers."""
    return metrics.squad([list(e.answers) for e in examples], list(predictions))
