"""Meta-learning over multi-task episodes (Alg. 3)."""
