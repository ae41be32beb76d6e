"""How t5mtl/data/vocabs/wordpiece_en_8k.txt (the "wordpiece_en" vocabulary) was made.

    python -m t5mtl.data.wordpiece_recipe --data_dir ../shared/data \
        --out t5mtl/data/vocabs/wordpiece_en_8k.txt

reads raw_text_en's train split (Tiny Shakespeare and ten Gutenberg books,
t5mtl.data.pretraining_tasks.RAW_TEXT_EN_TRAIN under the data_dir; without
--data_dir, T5MTL_DATA_DIR's) and trains an uncased WordPiece vocabulary with the
`tokenizers` package's WordPieceTrainer: BERT's normalizer (clean text, CJK
split, accents stripped, lowercased) and pre-tokenizer, 8,000 entries in all,
pieces seen at least twice, "##" continuations. Nothing is downloaded.

The file lists [PAD] [UNK] [CLS] [SEP] [MASK] (ids 0-4), then every other
token sorted by code point. The sort is there because the trainer's set of
tokens is reproducible but its order is not: it breaks ties between equally
frequent pieces by hash-map order, which changes from run to run, and a
WordPiece vocabulary's ids carry no meaning beyond naming its tokens.
"""
from __future__ import annotations

import argparse
import os
import sys

from t5mtl.errors import T5mtlError

VOCAB_SIZE = 8000
MIN_FREQUENCY = 2


def train_wordpiece(files: list[str], vocab_size: int = VOCAB_SIZE,
                    min_frequency: int = MIN_FREQUENCY) -> list[str]:
    """The tokens (by id) of an uncased WordPiece vocabulary trained on `files`."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    from t5mtl.data.wordpiece import SPECIAL_TOKENS
    for f in files:
        if not os.path.isfile(f):
            raise T5mtlError(f"training text file {f!r} does not exist")
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS), continuing_subword_prefix="##",
        show_progress=False)
    tokenizer.train(files, trainer)
    learned = set(tokenizer.get_vocab()) - set(SPECIAL_TOKENS)
    return list(SPECIAL_TOKENS) + sorted(learned)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the vocab.txt to write")
    parser.add_argument("--data_dir", default=None,
                        help="holds raw_text_en/ (default: t5mtl's data_dir)")
    parser.add_argument("--vocab_size", type=int, default=VOCAB_SIZE)
    args = parser.parse_args(argv)
    from t5mtl.data.data_dir import data_path
    from t5mtl.data.pretraining_tasks import RAW_TEXT_EN_TRAIN
    try:
        files = [data_path(f, data_dir=args.data_dir) for f in RAW_TEXT_EN_TRAIN]
        tokens = train_wordpiece(files, args.vocab_size)
    except T5mtlError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with open(args.out, "w", encoding="utf-8") as f:
        f.write("".join(t + "\n" for t in tokens))
    print(f"wrote {len(tokens)} tokens to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
