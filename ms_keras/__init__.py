"""ms_keras: Meta-Sparsity for multi-task networks in Keras 3 / TensorFlow."""

__version__ = "0.1.0"
