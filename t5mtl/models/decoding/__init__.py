"""Search over a model's step callback: greedy, sampled and beam decoding."""
from t5mtl.models.decoding.beam_search import beam_search, length_penalty
from t5mtl.models.decoding.sampling import filter_logits, sample_loop

__all__ = ["beam_search", "length_penalty", "filter_logits", "sample_loop"]
