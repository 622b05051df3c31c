"""JAX in float64, switched on here, once, by every module of the package that computes with JAX.

Bradley-Terry log-likelihoods over millions of battles lose digits in float32, and the ratings we publish must
agree with an independent scipy fit to 0.01 Elo points. Each JAX module imports this one before it builds an
array, so float64 is on whichever of them is imported first. Modules that need no JAX (reading battle files,
checking a snapshot's signature) do not import JAX at all: a web worker that only checks or serves signed
documents stays light.
"""

import jax

jax.config.update("jax_enable_x64", True)
