"""Trainers, callbacks and the experiment runner."""
