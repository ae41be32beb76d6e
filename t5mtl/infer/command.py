"""`t5mtl infer --model_dir DIR --input TEXT [--input TEXT ...]`."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model_dir", required=True,
                        help="a t5mtl model directory or an HF T5 directory")
    parser.add_argument("--input", action="append", required=True, help="input text (repeatable)")
    parser.add_argument("--max_new_tokens", type=int, default=32)
    parser.add_argument("--method", choices=["greedy", "sample", "beam"], default="greedy")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top_k", type=int, default=0)
    parser.add_argument("--top_p", type=float, default=1.0)
    parser.add_argument("--beam_size", type=int, default=4)
    parser.add_argument("--alpha", type=float, default=0.6, help="beam length penalty")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default latest)")
    parser.add_argument("--gin_file", action="append", default=[],
                        help="gin file (repeatable), e.g. one binding a custom model's modules")


def run(args: argparse.Namespace) -> int:
    import jax
    import numpy as np

    from t5mtl.data.batches import pad_ids
    from t5mtl.data.vocab import vocabulary_from_spec
    from t5mtl.errors import T5mtlError
    from t5mtl.models.encoder_decoder import DecodeConfig
    from t5mtl.train.model_dir import describe, load_params
    if args.gin_file or args.gin_bindings:
        from t5mtl import gin_config
        gin_config.parse(args.gin_file, args.gin_bindings)
    vocab = vocabulary_from_spec(describe(args.model_dir)["vocabulary"])
    if vocab is None:
        raise T5mtlError(f"{args.model_dir}: no vocabulary recorded; use the Python API with ids")
    model, params = load_params(args.model_dir, args.step)
    decode = DecodeConfig(max_decode_length=args.max_new_tokens, method=args.method,
                          temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                          beam_size=args.beam_size, alpha=args.alpha)
    enc = pad_ids([list(vocab.encode(text)) + [1] for text in args.input])     # + EOS
    ids = np.asarray(model.predict_batch(params, {"encoder_input_tokens": enc}, decode,
                                         jax.random.PRNGKey(args.seed)))
    for text, row in zip(args.input, ids):
        print(f"{text}\t{vocab.decode([int(t) for t in row])}")
    return 0
