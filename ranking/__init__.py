"""Pairwise ranking of AI models from battle logs: online Elo and Bradley-Terry with bootstrap intervals.

Pure numerics over arrays: nothing here knows about the web service or its database. Ratings are on the
Elo scale (400 points per factor of 10 in odds) unless a function says otherwise.

JAX runs in float64 here: Bradley-Terry log-likelihoods over millions of battles lose digits in float32, and
the ratings we publish must agree with an independent scipy fit to 0.01 Elo points. We switch it on once, in
this file, because every module of the package relies on it; an application that imports `ranking` gets
float64 JAX as a consequence.
"""
import jax

jax.config.update("jax_enable_x64", True)
