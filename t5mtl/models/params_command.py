"""`t5mtl params --model NAME`: parameter count without allocating weights."""
import argparse

from t5mtl.errors import T5mtlError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", action="append", required=True,
                        help="a named config (repeatable), e.g. t5_1_1_small; 'all' for every one")


def run(args: argparse.Namespace) -> int:
    from t5mtl.models.configs import NAMED_CONFIGS
    from t5mtl.models.init import count_params
    names = list(NAMED_CONFIGS) if args.model == ["all"] else args.model
    for name in names:
        if name not in NAMED_CONFIGS:
            raise T5mtlError(f"unknown model name {name!r}; known: {', '.join(NAMED_CONFIGS)}")
    for name in names:
        print(f"{name}\t{count_params(NAMED_CONFIGS[name]):,}")
    return 0
