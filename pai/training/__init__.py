"""Masked training of one ticket: the loop and its parts, and the one writer of a trained run."""
