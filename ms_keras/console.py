"""What a training run prints: one short line per epoch, and a summary.

Everything a run measures goes to TensorBoard and `metrics.json`; the
console gets what a person reads while waiting (`--verbose=2`): per epoch
the objective, each task's primary validation metric, the sparsity, lambda
and the seconds it took, in at most `LINE_WIDTH` characters. At the end the
summary names the test metrics (against the dense reference when there is
one), the sparsity, the FLOPs the slim model saves, its size, and the
commands that come next.
"""

import sys
import time

import keras

from ms_keras import task_kinds
from ms_keras import tasks as tasks_lib

LINE_WIDTH = 160
# Short names of the primary metrics, and whether higher is better.
_SHORT = {"miou": "mIoU", "mae": "MAE", "cosine_similarity": "cos",
          "accuracy": "acc", "abs_rel": "AbsRel"}


def _short_task(name):
    return name[:3]


def _number(value):
    return f"{value:.3g}" if abs(value) < 1e4 else f"{value:.2e}"


def _lambda(value):
    # A controller that zeroes nothing solves lambda = 0 (stored as 1e-12).
    return "0" if value < 1e-9 else f"{value:.1e}"


def epoch_line(epoch, epochs, seconds, logs, task_specs, label=""):
    """One epoch's line (at most `LINE_WIDTH` characters).

    Each task shows its primary validation metric (attributes: accuracy,
    named by the task alone when there are more than four tasks).
    """
    objective = logs.get("objective", logs.get("loss"))
    parts = [f"{label}epoch {epoch + 1}/{epochs}", f"{seconds:.0f}s"]
    if objective is not None:
        parts.append(f"{'objective' if 'objective' in logs else 'loss'} "
                     f"{_number(objective)}")
    many = len(task_specs) > 4
    tasks = []
    for task in task_specs:
        metric, _ = task_kinds.primary_metric(task)
        value = logs.get(f"val_{task.name}_{metric}")
        if value is None:
            continue
        name = _short_task(task.name)
        if not (many and metric == "accuracy"):
            name += f".{_SHORT.get(metric, metric)}"
        tasks.append(f"{name} {value:.{2 if many else 3}f}")
    if tasks:
        parts.append("| val " + " ".join(tasks) + " |")
    if "sparsity_parameter" in logs:
        parts.append(f"sparsity {logs['sparsity_parameter']:.1f}%")
    if "lambda" in logs:
        parts.append(f"lambda {_lambda(logs['lambda'])}")
    if "val_quality_gap" in logs:
        parts.append(f"gap {logs['val_quality_gap']:+.1f}%")
    line = " ".join(parts)
    return line if len(line) <= LINE_WIDTH else line[:LINE_WIDTH - 3] + "..."


class EpochLines(keras.callbacks.Callback):
    """Prints `epoch_line` at every epoch end (place it last, after every
    callback that adds to the logs).

    Args:
        task_specs: the run's tasks.
        epochs: the run's epoch count.
        label: printed first (which run the lines are of).
        stream: where to print (stdout).
    """

    def __init__(self, task_specs, epochs, label="", stream=None):
        super().__init__()
        self.task_specs = tuple(task_specs)
        self.epochs = int(epochs)
        self.label = label
        self.stream = stream or sys.stdout
        self._start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - (self._start or time.perf_counter())
        print(epoch_line(epoch, self.epochs, seconds, logs or {},
                         self.task_specs, self.label), file=self.stream,
              flush=True)


def _table(rows):
    widths = [max(len(str(row[i])) for row in rows)
              for i in range(len(rows[0]))]
    return ["  " + "  ".join(str(cell).ljust(width)
                             for cell, width in zip(row, widths)).rstrip()
            for row in rows]


def _change(value, reference, higher_is_better):
    """Relative change, positive when better."""
    if not reference:
        return ""
    change = (value - reference) / abs(reference)
    if not higher_is_better:
        change = -change
    return f"{100 * change:+.1f} %"


def summary(metrics, config):
    """The run's closing summary, a few lines of text.

    Args:
        metrics: the run's `metrics.json` payload.
        config: its ExperimentConfig.
    """
    control = metrics.get("sparsity_control") or {}
    reference = control.get("reference_test")
    selection = metrics["selection"]
    lines = [f"Test split, checkpoint of epoch {selection['epoch']} of "
             f"{metrics['epochs_trained']}:"]
    header = ["task", "metric", "value"]
    if reference:
        header += ["dense reference", "change (+ better)"]
    rows = [header]
    for task in tasks_lib.task_specs(config):
        metric, higher = task_kinds.primary_metric(task)
        value = metrics["test"][task.name][metric]
        row = [task.name,
               f"{_SHORT.get(metric, metric)} ({'up' if higher else 'down'})",
               f"{value:.4f}"]
        if reference:
            base = reference[task.name][metric]
            row += [f"{base:.4f}", _change(value, base, higher)]
        rows.append(row)
    lines += _table(rows)
    sparsity = metrics["sparsity"]
    facts = [
        ("sparsity", f"{sparsity['parameter_percent']:.1f} % of the backbone "
                     f"conv weights, {sparsity['group_percent']:.1f} % of its "
                     "input-channel groups"),
        ("FLOPs", f"{sparsity['flops_speedup']:.2f}x fewer in the slim "
                  "backbone (structural)"),
        ("slim model", f"{sparsity['structural_parameters']:,} of "
                       f"{sparsity['parameters']:,} backbone conv weights"),
    ]
    if metrics.get("lambda") is not None:
        facts.append(("lambda", _lambda(metrics["lambda"])))
    if control.get("mode"):
        facts.append(("control", _control_fact(control)))
    facts += [("run", config.model_dir),
              ("fingerprint", metrics["fingerprint"]),
              ("steps", str(metrics["steps"]))]
    lines += _table([[name, text] for name, text in facts])
    lines += [
        "Next:",
        f"  python -m ms_keras.export --model_dir={config.model_dir} "
        f"--output_dir={config.model_dir.rstrip('/')}_export",
        f"  tensorboard --logdir={config.model_dir}"]
    return "\n".join(lines)


def _control_fact(control):
    mode = control["mode"]
    if mode == "paper":
        return f"paper (lambda from {control['lambda_init']:.3g})"
    held = "holds" if control.get("holds") else "NOT met"
    if mode == "budget":
        constraint = control["constraint"]
        return (f"budget {constraint['measure']} {constraint['target']:g}, "
                f"{held} ({control['achieved']:.3g})")
    return (f"tolerance {control['constraint']['tolerance_percent']:g} % of "
            "the dense reference's validation losses, "
            f"{held} (worst task {control['quality_gap_percent']:+.2f} %)")
