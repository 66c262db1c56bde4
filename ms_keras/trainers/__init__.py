"""Trainers: multi-task (Alg. 1), meta-sparsity (Alg. 3), checkpointing."""
