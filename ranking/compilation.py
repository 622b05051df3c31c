"""A persistent XLA compilation cache, for callers that run fits again and again (the command line, the arena's
snapshot builder): compiling a fit costs seconds, running a small one milliseconds.

Not switched on by importing ranking: a library user decides their own JAX caching. ARENA_RANKING_CACHE names
the folder (default ~/.cache/arena-ranking/jax, or under XDG_CACHE_HOME), or "off".
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_folder() -> str | None:
    """The folder compiled fits are kept in, or None when ARENA_RANKING_CACHE is "off"."""
    folder = os.environ.get("ARENA_RANKING_CACHE") or str(
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "arena-ranking" / "jax"
    )
    return None if folder == "off" else folder


def enable_compilation_cache() -> str | None:
    """Keep XLA's compiled fits on disk between runs; the folder used (None: off). Imports JAX."""
    folder = cache_folder()
    if folder is None:
        return None
    import jax  # only here: importing this module loads no JAX

    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    return folder
