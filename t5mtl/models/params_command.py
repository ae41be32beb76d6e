"""`t5mtl params --model NAME`: parameter count without allocating weights."""
import argparse

from t5mtl.errors import T5mtlError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", action="append", required=True,
                        help="a named config (repeatable), e.g. t5_1_1_small or bert_base; "
                             "'all' for every one. T5 names count the whole encoder-decoder; "
                             "BERT names count HF's BertModel: embeddings, encoder and pooler, "
                             "without the masked-LM, classification or span head")


def _counters() -> dict:
    """Every named model -> a function computing its parameter count."""
    from t5mtl.models.bert import count_bert_params
    from t5mtl.models.bert_config import BERT_CONFIGS
    from t5mtl.models.configs import NAMED_CONFIGS
    from t5mtl.models.init import count_params
    counters = {name: (lambda c=cfg: count_params(c)) for name, cfg in NAMED_CONFIGS.items()}
    counters.update({name: (lambda c=cfg: count_bert_params(c))
                     for name, cfg in BERT_CONFIGS.items()})
    return counters


def run(args: argparse.Namespace) -> int:
    counters = _counters()
    names = list(counters) if args.model == ["all"] else args.model
    for name in names:
        if name not in counters:
            raise T5mtlError(f"unknown model name {name!r}; known: {', '.join(counters)}")
    for name in names:
        print(f"{name}\t{counters[name]():,}")
    return 0
