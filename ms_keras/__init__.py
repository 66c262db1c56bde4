"""ms_keras: Meta-Sparsity for multi-task networks in Keras 3 / TensorFlow.

The public API (`ms_keras.api`); names load on first use, so that importing
a submodule does not start TensorFlow:

- `MultiTaskModel(backbone, heads)`: any functional backbone, a head model
  per task.
- `Task(name, loss=..., metrics=[...])`, or a built-in kind:
  `Task.segmentation`, `.depth`, `.normals`, `.edges`, `.attribute`.
- `MetaSparsityTrainer(model, tasks, **options)`: meta-sparsity (Alg. 3);
  `MultiTaskTrainer(model, tasks)`: dense or fixed-lambda training.
- `FusedAdam(learning_rate)`: Keras' Adam with TensorFlow's fused update
  kernel (what the binaries train with).
- `sparsity_report(model)`, `slim_model(model)`,
  `export_model(model, output_dir, formats=("saved_model", "tflite"))`.
"""

import importlib

__version__ = "0.1.0"

_PUBLIC = {
    "MultiTaskModel": "ms_keras.models.multitask",
    "Task": "ms_keras.tasks",
    "MetaSparsityTrainer": "ms_keras.trainers.meta_sparsity",
    "MultiTaskTrainer": "ms_keras.trainers.multitask",
    "FusedAdam": "ms_keras.trainers.optimizers",
    "sparsity_report": "ms_keras.api",
    "slim_model": "ms_keras.api",
    "export_model": "ms_keras.api",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'ms_keras' has no attribute '{name}'")


def __dir__():
    return sorted([*globals(), *_PUBLIC])
