"""CLIP at toy scale: zero-shot digit classification (one prompt and a
prompt ensemble), a linear probe, and image <-> text retrieval, of a CLIP
trained on clip_pretrain (digits and drawn shapes with captions) through
the project's trainer with gin/runs/clip.gin, against the same model
untrained and chance.

  python -m bench.clip --seeds 3 --out /tmp/t5mtl_clip

Rows (all on the tasks' validation splits, which no training step reads):
  zero-shot     the 400 test digits classified by cosine with each class's
                text embedding: one prompt ("a handwritten {}"), and the
                ensemble of the five caption templates of clip_digits
                (vision_data.DIGIT_TEMPLATES); then one and five prompts no
                training caption uses (UNSEEN_TEMPLATES); chance = the
                majority class.
                The class names appear in the training captions: zero-shot
                in CLIP's sense (no image labels, no classifier training),
                not unseen classes.
  linear probe  logistic regression on the ViT's CLS features of the 1,397
                train digits, accuracy on the 400 test digits; chance = the
                majority class.
  retrieval     the 288 test shape images and their 288 captions (each
                caption string describes two images: both count as
                relevant); image -> text and text -> image recall@1/5;
                chance = a random ranking's expected recall.

The run is kept under --out (a rerun reuses a finished one); --quick trains
a few steps (a smoke run, numbers meaningless).
"""
from __future__ import annotations

import argparse
import os

import numpy as np

from bench import comparison

GIN_FILE = "gin/runs/clip.gin"
ONE_PROMPT = "a handwritten {}"
# prompts no training caption uses: the ensemble's effect where the text
# tower has not seen the phrasing
UNSEEN_TEMPLATES = ("a photo of the number {}", "an image of a {}", "number {}", "{}",
                    "a drawing of the digit {}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="/tmp/t5mtl_clip", help="the run, results.json, table.md")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0, help="initialization and data order")
    p.add_argument("--seeds", type=int, default=1,
                   help="runs with seeds seed .. seed + seeds - 1; cells 'mean ± std'")
    p.add_argument("--quick", action="store_true", help="a few steps (a smoke run)")
    p.add_argument("--gin", action="append", default=[],
                   help="extra gin bindings, e.g. --gin \"CLIP.embed_dim = 32\"")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.batch_size = 4, 16
    return args


def train_clip(args, seed: int) -> str:
    """Trains (or reuses) --out/run_<seed> with GIN_FILE; returns the model_dir."""
    import gin

    from t5mtl import gin_config
    from t5mtl.train.trainer import train
    run = os.path.join(args.out, f"run_{seed}")
    warmup = max(1, args.steps // 10)
    gin.clear_config()
    gin_config.parse([GIN_FILE], [
        f"train.num_steps = {args.steps}", f"train.seed = {seed}",
        f"train.log_period = {max(1, args.steps // 10)}",
        f"DataConfig.batch_size = {args.batch_size}", f"DataConfig.seed = {seed}",
        f"learning_rate_schedule.warmup_steps = {warmup}",
        f"learning_rate_schedule.decay_steps = {max(args.steps, warmup + 1)}",
        "train.show_progress = False", *args.gin])
    train(run, before_training=lambda: gin_config.write_config(run))
    return run


def evaluate(model, params, batch_size: int = 64) -> dict:
    """Every number of the table for one set of params."""
    from t5mtl.data import vision_data as vd
    from t5mtl.data import vision_tasks as vt
    from t5mtl.data.vocab import get_vocabulary
    from t5mtl.infer import clip_eval as ce
    vocab = get_vocabulary("wordpiece_en")
    embed_text = ce.text_embedder(model, params, vocab, length=16, batch_size=batch_size)
    out = {}
    test_images, test_labels = vd.digits_split("test")
    train_images, train_labels = vd.digits_split("train")
    images = ce.image_embeddings(model, params, test_images, batch_size)
    for name, templates in (("zero_shot_1", [ONE_PROMPT]),
                            ("zero_shot_ensemble", list(vd.DIGIT_TEMPLATES)),
                            ("zero_shot_unseen_1", list(UNSEEN_TEMPLATES[:1])),
                            ("zero_shot_unseen_ensemble", list(UNSEEN_TEMPLATES))):
        classifier = ce.zero_shot_classifier(embed_text, vd.DIGIT_NAMES, templates)
        out[name] = ce.accuracy(images @ classifier.T, test_labels)
    out["zero_shot_chance"] = ce.majority_share(test_labels)
    out["linear_probe"] = ce.linear_probe(
        ce.image_features(model, params, train_images, batch_size), train_labels,
        ce.image_features(model, params, test_images, batch_size), test_labels)
    out["linear_probe_chance"] = out["zero_shot_chance"]
    out["linear_probe_pixels"] = ce.linear_probe(train_images.reshape(len(train_images), -1),
                                                 train_labels,
                                                 test_images.reshape(len(test_images), -1),
                                                 test_labels)
    shapes, _, texts = vt.task_arrays("clip_shapes", "validation")
    captions = [t for _, t in texts]
    relevant = ce.caption_relevance(np.arange(len(captions)), captions)
    out.update(ce.retrieval_scores(ce.image_embeddings(model, params, shapes, batch_size),
                                   embed_text(captions), relevant))
    return out


ROWS = (("zero-shot digits, 1 prompt (acc)", "zero_shot_1", "zero_shot_chance"),
        ("zero-shot digits, 5-prompt ensemble (acc)", "zero_shot_ensemble", "zero_shot_chance"),
        ("zero-shot digits, 1 unseen prompt (acc)", "zero_shot_unseen_1", "zero_shot_chance"),
        ("zero-shot digits, 5 unseen prompts ensembled (acc)", "zero_shot_unseen_ensemble",
         "zero_shot_chance"),
        ("linear probe digits, ViT CLS features (acc)", "linear_probe", "linear_probe_chance"),
        ("shapes image->text R@1", "i2t_R@1", "i2t_R@1_chance"),
        ("shapes image->text R@5", "i2t_R@5", "i2t_R@5_chance"),
        ("shapes text->image R@1", "t2i_R@1", "t2i_R@1_chance"),
        ("shapes text->image R@5", "t2i_R@5", "t2i_R@5_chance"))


def main(argv=None) -> str:
    args = parse_args(argv)
    from t5mtl.train.compile_cache import use_compilation_cache
    use_compilation_cache(os.path.join(args.out, "xla_cache"))
    import jax

    from t5mtl.train.model_dir import load_params
    results = {"steps": args.steps, "batch_size": args.batch_size, "seeds": {}}
    per_seed = []
    for seed in range(args.seed, args.seed + args.seeds):
        model, trained = load_params(train_clip(args, seed))
        untrained = model.init_params(jax.random.PRNGKey(seed))
        got = {"trained": evaluate(model, trained), "untrained": evaluate(model, untrained)}
        results["seeds"][seed] = got
        per_seed.append([(label, [100 * got["trained"][key], 100 * got["untrained"][key],
                                  100 * got["trained"][chance]])
                         for label, key, chance in ROWS])
    rows = comparison.over_seeds(per_seed) if args.seeds > 1 else per_seed[0]
    seeds = f", {args.seeds} seeds" if args.seeds > 1 else ""
    table = comparison.markdown(
        f"metric (%), CLIP {args.steps} steps x batch {args.batch_size}{seeds}",
        ["trained", "untrained (init)", "chance"], rows)
    pixels = got["trained"]["linear_probe_pixels"]
    table += f"\n\nFor reference, a linear probe on the raw pixels: {100 * pixels:.1f}%."
    return comparison.write_results(args, results, table)


if __name__ == "__main__":
    main()
