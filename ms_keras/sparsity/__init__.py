"""Sparsity: groups, proximal operators, the learnable lambda, statistics."""
