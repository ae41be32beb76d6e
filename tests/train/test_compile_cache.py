import os
import subprocess
import sys

import jax

from t5mtl.train.compile_cache import use_compilation_cache


def test_a_cache_already_chosen_wins(tmp_path, compilation_cache):
    """The test session chose one: a command's own directory does not replace it."""
    assert use_compilation_cache(str(tmp_path / "mine")) == compilation_cache
    assert jax.config.jax_compilation_cache_dir == compilation_cache


def test_without_one_the_commands_directory_caches_every_program(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_PERSISTENT_CACHE")
           and k != "JAX_COMPILATION_CACHE_DIR"}
    code = ("import jax, jax.numpy as jnp\n"
            "from t5mtl.train.compile_cache import use_compilation_cache\n"
            f"print(use_compilation_cache({str(tmp_path / 'cache')!r}))\n"
            "jax.jit(lambda x: x * 3 + 1)(jnp.ones(4)).block_until_ready()\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == str(tmp_path / "cache")
    assert os.listdir(tmp_path / "cache")          # the tiny program was written there
