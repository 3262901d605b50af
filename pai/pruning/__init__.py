"""Masks and what makes them: the scorer protocol, the registry of plugins, the prune driver,
sanity transforms and layer collapse."""
