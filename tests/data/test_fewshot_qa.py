"""t5mtl/data/fewshot_qa.py: SQuAD dev questions with gold passage ids and
the few-shot split by article."""
import pytest

from t5mtl.data import fewshot_qa, passages
from t5mtl.errors import T5mtlError


@pytest.fixture(scope="module")
def questions(shared_data_dir):
    return fewshot_qa.squad_questions(shared_data_dir)


def test_questions_have_their_gold_paragraph(questions, shared_data_dir):
    corpus = {p.id: p for p in passages.squad_passages(shared_data_dir)}
    assert len(questions) == 10570
    assert len({q.id for q in questions}) == 10570
    first = questions[0]
    assert first.passage_id == "squad/0/0" and first.article == 0
    assert first.question == "Which NFL team represented the AFC at Super Bowl 50?"
    assert first.answers == ("Denver Broncos", "Denver Broncos", "Denver Broncos")
    for q in questions:
        assert q.passage_id in corpus
        assert any(a in corpus[q.passage_id].text for a in q.answers), q.id


def test_split_is_deterministic_disjoint_by_article(questions):
    train, test = fewshot_qa.fewshot_split(questions, train_size=64, test_size=500, seed=0)
    assert len(train) == 64 and len(test) == 500
    again = fewshot_qa.fewshot_split(questions, train_size=64, test_size=500, seed=0)
    assert (train, test) == again
    assert not {q.article for q in train} & {q.article for q in test}
    assert not {q.id for q in train} & {q.id for q in test}
    assert len({q.id for q in train}) == 64 and len({q.id for q in test}) == 500
    # file order within each set, and the 64 spread over several articles
    index = {q.id: i for i, q in enumerate(questions)}
    assert [index[q.id] for q in train] == sorted(index[q.id] for q in train)
    assert len({q.article for q in train}) == 20       # of the 24 train articles
    assert train[0].id == "56ddde6b9a695914005b9628" and train[0].passage_id == "squad/2/0"
    # half of the 48 articles are train articles
    other = fewshot_qa.fewshot_split(questions, train_size=64, test_size=500, seed=1)
    assert other[0] != train
    assert len({q.article for q in questions}) == 48


def test_split_sizes_and_bad_input(questions):
    train, test = fewshot_qa.fewshot_split(questions, train_size=3, test_size=7, seed=5)
    assert (len(train), len(test)) == (3, 7)
    with pytest.raises(T5mtlError, match="train_size 100000 is more than"):
        fewshot_qa.fewshot_split(questions, train_size=100000)
    with pytest.raises(T5mtlError, match="got 0, 500"):
        fewshot_qa.fewshot_split(questions, train_size=0)
    with pytest.raises(T5mtlError, match="got 1.5"):
        fewshot_qa.fewshot_split(questions, train_article_share=1.5)
    with pytest.raises(T5mtlError, match="at least 2 articles, got 1"):
        fewshot_qa.fewshot_split([q for q in questions if q.article == 0], 2, 2)


def test_qa_scores_reuse_squad_metric(questions):
    ex = questions[:2]
    scores = fewshot_qa.qa_scores(ex, ["the Denver Broncos", "Carolina"])
    assert ex[1].answers[0] == "Carolina Panthers"
    assert scores["em"] == 50.0
    assert scores["f1"] == pytest.approx(100 * (1.0 + 2 / 3) / 2)
