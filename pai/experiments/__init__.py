"""Experiment kinds built from searches and training: compare, collapse, presets."""
