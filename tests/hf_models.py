"""Random-init HF T5 models built in-test (no downloads) for parity checks."""
import os

import numpy as np

TINY_HF = {
    # v1.0 style: relu MLP, tied embeddings, decoder deeper than encoder.
    "v1_0": dict(vocab_size=300, d_model=32, d_kv=8, d_ff=48, num_heads=4, num_layers=2,
                 num_decoder_layers=3, feed_forward_proj="relu", tie_word_embeddings=True,
                 relative_attention_num_buckets=32, relative_attention_max_distance=128,
                 dropout_rate=0.0),
    # v1.1 style: gated-gelu, untied logits.
    "v1_1": dict(vocab_size=300, d_model=32, d_kv=8, d_ff=40, num_heads=4, num_layers=2,
                 feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                 relative_attention_num_buckets=32, relative_attention_max_distance=128,
                 dropout_rate=0.0),
}
# v1.1 style with room for t5mtl's byte vocabulary (359 ids, padded to 384).
TINY_HF["byte_vocab"] = dict(TINY_HF["v1_1"], vocab_size=384)


def make_hf_model(kind: str, directory: str, seed: int = 0):
    """Saves a random T5ForConditionalGeneration to `directory` and returns it."""
    import torch
    import transformers
    torch.manual_seed(seed)
    kwargs = dict(TINY_HF[kind], pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    config = transformers.T5Config(**kwargs)
    # transformers 5.x ignores tie_word_embeddings in the constructor.
    config.tie_word_embeddings = kwargs["tie_word_embeddings"]
    model = transformers.T5ForConditionalGeneration(config).eval()
    with torch.no_grad():
        # Larger random weights than HF's init so that differences show.
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) * 0.3)
        # T5 always shares the input embedding between encoder and decoder.
        model.encoder.embed_tokens.weight = model.shared.weight
        model.decoder.embed_tokens.weight = model.shared.weight
        if not kwargs["tie_word_embeddings"]:
            if model.lm_head.weight.data_ptr() == model.shared.weight.data_ptr():
                model.lm_head.weight = torch.nn.Parameter(torch.randn_like(model.shared.weight))
    os.makedirs(directory, exist_ok=True)
    model.save_pretrained(directory)
    return model


def padded_batch(rng: np.random.RandomState, vocab: int, batch=3, enc_len=11, dec_len=7):
    enc = rng.randint(2, vocab, size=(batch, enc_len)).astype(np.int32)
    enc[1, 6:] = 0      # padding at the end of row 1
    enc[2, 9:] = 0
    dec = rng.randint(2, vocab, size=(batch, dec_len)).astype(np.int32)
    dec[:, 0] = 0       # decoder start token
    return enc, dec
