"""JAX's persistent compilation cache for commands that build the same
programs many times (a comparison's runs, a transfer map's pairs, reruns
that resume): each program compiles once and later builds read it.

A cache already chosen wins: a test session's, or the user's
JAX_COMPILATION_CACHE_DIR. A cached executable is the compiled program
itself, so results do not depend on whether it was read or built.
"""
from __future__ import annotations


def use_compilation_cache(directory: str) -> str:
    """Cache every compiled program under `directory` unless a cache
    directory is already set; returns the directory in use."""
    import jax
    current = jax.config.jax_compilation_cache_dir
    if current:
        return current
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return directory
