"""LoRA (Hu et al., 2021): a frozen kernel W is used as W + (alpha / rank) A B,
with A [in, rank] and B [rank, out] trained.

    EncoderDecoderModel.weight_adapter = @LoRA()
    LoRA.rank = 8
    LoRA.alpha = 16
    LoRA.patterns = [".*attention/(query|value)/kernel"]     # any kernels, by regex
    LoRA.dropout = 0.1                                        # optional
    train.trainable_patterns = ["lora/.*"]

It plugs into the model's weight-adapter seam: the model holds the LoRA
factors as its own subtree, `lora/<kernel name>/{a,b}`, and every forward
pass (training, scoring, decoding) runs on `apply(params)`, the params with
each chosen kernel replaced by W + scale A B. The T5 modules never see an
adapter. `merge(params)` is the same sum, kept: a plain model with the
adapter folded in computes what the adapted one does.

A kernel's "in" side is its embed axis when the kernel starts there (query,
key, value, wi, logits) and every axis but the last otherwise (attention
out [heads, kv, embed], wo [mlp, embed]); a scanned kernel's leading layers
axis gets one factor pair per layer. A starts Gaussian (std in**-0.5), B at
zero, so training starts from the base model's outputs exactly.

Choices against HF peft: the factors multiply into the weight, not the
activations, so one kernel's gradient costs what full finetuning of that
kernel costs (peft saves it). LoRA dropout, which peft applies to the
adapter's input per token, is applied here to A's input rows while training:
input feature i reaches the adapter path (kept features scaled by 1/(1-p))
or not, with one mask per kernel and step shared by every token, so the
adapted kernel is still one weight, W + scale (m/(1-p) * A) B. Scoring and
decoding use no dropout, and `merge` folds in the plain factors.
"""
from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, Sequence

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp

from t5mtl.errors import T5mtlError
from t5mtl.models import param_names


@gin.configurable
@dataclasses.dataclass(frozen=True)
class LoRA:
    subtree: ClassVar[str] = "lora"
    init_fields: ClassVar[tuple[str, ...]] = ("dropout",)   # training only, not architecture
    rank: int = 8
    alpha: float = 16.0
    patterns: Sequence[str] = (r".*attention/(query|value)/kernel",)
    dropout: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "patterns", tuple(self.patterns))
        if self.rank < 1:
            raise T5mtlError(f"LoRA.rank={self.rank}: must be at least 1")
        if not 0.0 <= self.dropout < 1.0:
            raise T5mtlError(f"LoRA.dropout={self.dropout}: must be in [0, 1)")

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def targets(self, boxed_params) -> dict[str, nn.Partitioned]:
        """{kernel name: boxed kernel} of the kernels the patterns choose."""
        compiled = param_names.compile_patterns(self.patterns, "LoRA")
        kernels = {name: leaf for name, leaf in param_names.flatten(boxed_params).items()
                   if name.endswith("/kernel")}
        param_names.check_all_match(list(kernels), compiled, "LoRA")
        chosen = {name: leaf for name, leaf in kernels.items()
                  if param_names.matches(name, compiled)}
        return chosen

    def init(self, rng, boxed_params) -> dict:
        """The `lora` subtree ({"a", "b"} per chosen kernel), boxed with logical axes."""
        out = {}
        targets = self.targets(boxed_params)
        for key, (name, box) in zip(jax.random.split(rng, max(len(targets), 1)),
                                    sorted(targets.items())):
            names = tuple(box.names)
            lead = 1 if names[0] == "layers" else 0
            n_in = _n_in(names[lead:])
            shape = box.value.shape
            a_shape = shape[:lead + n_in] + (self.rank,)
            b_shape = shape[:lead] + (self.rank,) + shape[lead + n_in:]
            fan_in = math.prod(shape[lead:lead + n_in])
            a = jax.random.normal(key, a_shape, jnp.float32) * fan_in ** -0.5
            out[name] = {
                "a": nn.LogicallyPartitioned(a, names[:lead + n_in] + ("lora",)),
                "b": nn.LogicallyPartitioned(jnp.zeros(b_shape, jnp.float32),
                                    names[:lead] + ("lora",) + names[lead + n_in:])}
        return param_names.unflatten({f"{n}/{k}": v for n, ab in out.items()
                                      for k, v in ab.items()})

    def apply(self, params, dropout_rng=None) -> dict:
        """params without the `lora` subtree, each adapted kernel W replaced
        by W + scale A B; with `dropout_rng` (training) and `dropout` > 0,
        A's input rows dropped as the module doc says."""
        if self.subtree not in params:
            return params
        flat = param_names.flatten({k: v for k, v in params.items() if k != self.subtree})
        factors = param_names.flatten(params[self.subtree])
        for i, name in enumerate(sorted({n.rsplit("/", 1)[0] for n in factors})):
            if name not in flat:
                raise T5mtlError(f"LoRA factors for {name!r}, which the model does not have")
            a = factors[f"{name}/a"]
            if dropout_rng is not None and self.dropout > 0:
                keep = jax.random.bernoulli(jax.random.fold_in(dropout_rng, i),
                                            1.0 - self.dropout, a.shape[:-1])
                a = jnp.where(keep[..., None], a / (1.0 - self.dropout), 0.0)
            flat[name] = flat[name] + self.scale * delta(
                a, factors[f"{name}/b"], flat[name].shape).astype(flat[name].dtype)
        return param_names.unflatten(flat)

    def merge(self, params) -> dict:
        """Plain params computing what the adapted model computes at inference."""
        return self.apply(params)


def delta(a, b, kernel_shape) -> jnp.ndarray:
    """A B in the kernel's shape: A [*lead, *in, r], B [*lead, r, *out]."""
    lead = a.ndim + b.ndim - 2 - len(kernel_shape)
    n_in = a.ndim - lead - 1
    lead_shape = a.shape[:lead]
    a2 = a.reshape(lead_shape + (math.prod(a.shape[lead:lead + n_in]), a.shape[-1]))
    b2 = b.reshape(lead_shape + (b.shape[lead], math.prod(b.shape[lead + 1:])))
    return jnp.matmul(a2, b2).reshape(kernel_shape)


def _n_in(axes: tuple[str, ...]) -> int:
    """How many leading kernel axes are its input (see the module doc)."""
    if axes[0] == "embed" or axes[-1] != "embed":
        return 1
    return len(axes) - 1
