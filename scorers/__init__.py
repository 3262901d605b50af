"""pai's built-in pruning-at-initialization scorers, one module each.

They are registered exactly as a third-party plugin is: under the `pai.scorers` entry-point
group in `pyproject.toml`. See `scorers/README.md` for the protocol and how to add one.
"""
