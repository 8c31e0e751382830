"""Simulation: shipped data sets, partner splits, the Flower simulation runner, evaluation."""
