"""Trainers: datasets, model builders, training, compression and hardware cost (torch)."""
