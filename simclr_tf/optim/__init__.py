"""Optimisation: LARS, the learning-rate schedule and the optimizer choice."""
