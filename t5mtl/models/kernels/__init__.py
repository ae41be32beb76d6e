"""The kernel switch: which implementation computes the model's hot spots.

``T5Config.kernels`` names one of

* ``"xla"``: the plain functions of `reference` left to autodiff. The
  reference for every other setting, the path for TPUs and GPUs, and the
  one that supports forward-mode differentiation (`jax.jvp`,
  forward-over-reverse) through the model.
* ``"cpu"``: hand-written VJPs tuned for XLA's CPU backend: attention that
  keeps only the probabilities or the row log-normalizers
  (`cpu_attention`), the feed-forward output that recomputes its
  activation (`cpu_ffn_output`), dense layers whose weight gradient runs as
  a row-major matmul (`cpu_dense`). Same values and gradients as "xla"
  (tests/models/kernels); `custom_vjp` functions have no forward-mode rule.
* ``"jax_attention"``: attention through `jax.nn.dot_product_attention`
  (`jax_attention`: cuDNN flash attention on NVIDIA GPUs where the dtype and
  shapes allow, else XLA's own formulation), the rest as "xla". Opt-in until
  measured faster on an accelerator.
* ``"auto"`` (the default): "cpu" when JAX runs on the CPU alone, else "xla".

The choice changes how the model is differentiated, never what it computes;
it is not part of a checkpoint's architecture.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax

from t5mtl.errors import T5mtlError
from t5mtl.models.kernels import (cpu_attention, cpu_dense, cpu_ffn_output, jax_attention,
                                  reference)

KERNELS = ("auto", "xla", "cpu", "jax_attention")


class Kernels(NamedTuple):
    """The functions a kernel setting provides (signatures as in `reference`)."""
    name: str
    attention: Callable
    activation_dense: Callable
    dense: Callable


XLA = Kernels("xla", reference.attention, reference.activation_dense, reference.dense)
JAX_ATTENTION = Kernels("jax_attention", jax_attention.attention, reference.activation_dense,
                        reference.dense)
CPU = Kernels("cpu", cpu_attention.dot_product_attention, cpu_ffn_output.activation_dense,
              cpu_dense.dense)


def check(name: str) -> None:
    if name not in KERNELS:
        raise T5mtlError(f"kernels={name!r}; expected one of {', '.join(KERNELS)}")


def resolve(name: str) -> str:
    """The setting itself, "auto" resolved: "cpu" only when every device JAX
    has is a CPU, else "xla"."""
    check(name)
    if name != "auto":
        return name
    return "cpu" if all(d.platform == "cpu" for d in jax.devices()) else "xla"


def get(name: str) -> Kernels:
    """The kernels for a setting ("auto" resolved now)."""
    return {"cpu": CPU, "jax_attention": JAX_ATTENTION}.get(resolve(name), XLA)
