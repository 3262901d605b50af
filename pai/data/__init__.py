"""Datasets: their specs (`specs`), loading whole splits onto the device and the seeded
training and scoring subsets (`loading`)."""
