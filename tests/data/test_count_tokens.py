"""count_tokens: the real (non-padding) tokens of a batch, whatever the
model's features (the trainer's tokens_per_second)."""
import numpy as np

from t5mtl.data.data_config import count_tokens


def test_encoder_decoder_classifier_and_dual_encoder_batches():
    enc = np.array([[5, 6, 1, 0], [7, 1, 0, 0]])
    dec = np.array([[3, 1], [1, 0]])
    assert count_tokens({"encoder_input_tokens": enc, "decoder_target_tokens": dec,
                         "decoder_input_tokens": dec}) == 5 + 3
    assert count_tokens({"encoder_input_tokens": enc, "classifier_labels": np.array([1, 0])}) == 5
    # A retriever's batch: query and passage tokens (once counted as 0).
    assert count_tokens({"query_tokens": enc, "passage_tokens": np.array([[9, 9, 9, 1]] * 2)}) == 13


def test_image_text_batch_counts_its_text():
    # CLIP's batch (t5mtl.data.vision_features): the caption tokens; pixels are not tokens.
    batch = {"image": np.ones((2, 16, 16, 3), np.float32),
             "text_tokens": np.array([[4, 5, 0], [6, 0, 0]])}
    assert count_tokens(batch) == 3
