"""bench/passage_index.py's corpus: SQuAD's paragraphs first, then book
windows with a stride that gives the number asked for."""
from bench.passage_index import corpus_texts
from t5mtl.data import passages


def test_corpus_has_the_number_asked_for(shared_data_dir):
    squad = [p.text for p in passages.squad_passages(shared_data_dir)]
    for n in (2000, 30_000):
        texts = corpus_texts(n, 100, shared_data_dir)
        assert len(texts) == n and texts[:min(n, len(squad))] == squad[:n]
    assert len(set(corpus_texts(30_000, 100, shared_data_dir))) > 29_000    # overlapping, not repeated
