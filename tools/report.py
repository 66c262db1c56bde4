"""Tables and plots of finished runs, in the paper's layouts.

    python tools/report.py runs/study_nyu --output_dir=runs/study_nyu/report

Every directory below the given paths that holds `metrics.json` is a run.
Runs are grouped into configurations by the directory above their
`seed_<s>` directory (the study layout), or by their own name. Writes:

- `table.md` / `table.csv`: the Table 3 / A.1 layout: per configuration the
  mean +- std over seeds of each task's test metric (the paper's metric per
  task), parameter and group sparsity (%), lambda and the FLOPs speed-up;
  the best mean of each column is marked (bold in Markdown, `best` in CSV).
- `lambda_sparsity.png`: lambda and parameter sparsity over the training
  steps of every run (the paper's Fig. 6-7), read from the TensorBoard
  events with tensorboard's own reader.
- `metric_vs_sparsity.png`: each task's test metric against parameter
  sparsity, one point per run (Fig. 5).
- With `--cost`, also `cost.md` / `cost.csv` (Table 6): training time, the
  time of the runs a configuration starts from (`--from_dir`) or takes its
  mask from (`--mask_from`), the hyperparameter values tuned, and the total
  (own + sources) x values tuned.
"""

import csv
import glob
import io
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from ms_keras import quiet_tf  # noqa: E402,F401  (must precede TensorFlow)

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from ms_keras import run_dir  # noqa: E402
from ms_keras import task_kinds  # noqa: E402
from ms_keras import tasks as tasks_lib  # noqa: E402

FLAGS = flags.FLAGS


def define_flags():
    """The command line's flags (defined only when run as a program, so the
    functions here can be imported next to other binaries)."""
    flags.DEFINE_string("output_dir", None, "Where the tables and plots go.")
    flags.DEFINE_boolean(
        "cost", False, "Also write the Table 6 layout (training time, tuned "
        "hyperparameter values).")
    flags.mark_flag_as_required("output_dir")

# Column name -> (getter on a run's metrics, higher is better).
_SPARSITY_COLUMNS = {
    "parameter sparsity %": (lambda m: m["sparsity"]["parameter_percent"],
                             None),
    "group sparsity %": (lambda m: m["sparsity"]["group_percent"], None),
    "lambda": (lambda m: m["lambda"], None),
    "FLOPs speed-up": (lambda m: m["sparsity"]["flops_speedup"], True),
}


def find_runs(paths):
    """`[(configuration, run dir)]` of every finished run below `paths`."""
    found = []
    for path in paths:
        for metrics in sorted(glob.glob(os.path.join(path, "**",
                                                      run_dir.METRICS_FILE),
                                        recursive=True)):
            run = os.path.dirname(metrics)
            name = os.path.basename(run)
            parent = os.path.basename(os.path.dirname(run))
            found.append((parent if name.startswith("seed_") else name, run))
    return found


def load(run):
    run = run_dir.Run(run)
    return run.metrics, run.config


def task_columns(configs):
    """`[(column, task, metric, higher is better)]` in task-number order."""
    columns = {}
    for config in configs:
        spec = tasks_lib.get_dataset(config["data"]["dataset"],
                                     config["data"]["segmentation_classes"])
        for task in tasks_lib.parse_tasks(spec, config["tasks"]):
            metric, higher = task_kinds.primary_metric(task)
            arrow = "up" if higher else "down"
            columns[task.number, task.name] = (
                f"T{task.number} {task.name} {metric} ({arrow})", task.name,
                metric, higher)
    return [columns[key] for key in sorted(columns)]


def summarise(runs):
    """Per configuration: `{column: (mean, std, n)}` and the column order.

    The std is the sample standard deviation over seeds (0 for one run).
    """
    loaded = {run: load(run) for _, run in runs}
    columns = task_columns([config for _, config in loaded.values()])
    getters = {name: (lambda m, t=task, k=metric: m["test"][t][k], higher)
               for name, task, metric, higher in columns}
    getters.update(_SPARSITY_COLUMNS)
    table = {}
    for configuration, run in runs:
        row = table.setdefault(configuration, {})
        metrics = loaded[run][0]
        for name, (get, _) in getters.items():
            try:
                value = get(metrics)
            except (KeyError, TypeError):
                continue
            if value is not None:
                row.setdefault(name, []).append(float(value))
    summary = {}
    for configuration, row in table.items():
        summary[configuration] = {
            name: (statistics.fmean(values),
                   statistics.stdev(values) if len(values) > 1 else 0.0,
                   len(values))
            for name, values in row.items()}
    return summary, getters


def best_rows(summary, getters):
    """`{column: configuration with the best mean}` for ranked columns."""
    best = {}
    for name, (_, higher) in getters.items():
        if higher is None:
            continue
        means = {c: row[name][0] for c, row in summary.items() if name in row}
        if means:
            pick = max if higher else min
            best[name] = pick(means, key=means.get)
    return best


def _cell(stats, digits):
    if stats is None:
        return "-"
    mean, std, _ = stats
    return f"{mean:.{digits}f} +- {std:.{digits}f}"


def write_tables(summary, getters, output_dir):
    """Writes table.md and table.csv; returns the Markdown."""
    best = best_rows(summary, getters)
    names = list(getters)
    header = ["configuration", "runs", *names]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "---|" * len(header)]
    rows = []
    for configuration in sorted(summary):
        row = summary[configuration]
        runs = max(stats[2] for stats in row.values())
        cells = []
        for name in names:
            digits = 2 if "%" in name or "speed" in name else 4
            cell = _cell(row.get(name), digits)
            if best.get(name) == configuration:
                cell = f"**{cell}**"
            cells.append(cell)
        lines.append(f"| {configuration} | {runs} | " + " | ".join(cells)
                     + " |")
        rows.append((configuration, runs, row))
    markdown = "\n".join(lines) + "\n"
    with open(os.path.join(output_dir, "table.md"), "w") as f:
        f.write(markdown)
    with open(os.path.join(output_dir, "table.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["configuration", "runs"] + [
            f"{name} {part}" for name in names
            for part in ("mean", "std", "best")])
        for configuration, runs, row in rows:
            values = []
            for name in names:
                mean, std, _ = row.get(name, (None, None, 0))
                values += [mean, std, int(best.get(name) == configuration)]
            writer.writerow([configuration, runs, *values])
    return markdown


def scalars(run, tag):
    """`(steps, values)` of a TensorBoard scalar in `<run>/train`."""
    from tensorboard.backend.event_processing import event_accumulator  # noqa
    import tensorflow as tf  # noqa: PLC0415
    steps, values = [], []
    for path in sorted(glob.glob(os.path.join(run, "train", "events*"))):
        events = event_accumulator.EventAccumulator(
            path, size_guidance={event_accumulator.TENSORS: 0,
                                 event_accumulator.SCALARS: 0})
        events.Reload()
        if tag in events.Tags().get("tensors", []):
            for event in events.Tensors(tag):
                steps.append(event.step)
                values.append(float(tf.make_ndarray(event.tensor_proto)))
        elif tag in events.Tags().get("scalars", []):
            for event in events.Scalars(tag):
                steps.append(event.step)
                values.append(event.value)
    return steps, values


def plot_profiles(runs, path):
    """lambda and parameter sparsity over the steps of every run."""
    import matplotlib  # noqa: PLC0415
    matplotlib.use("Agg")
    from matplotlib import pyplot  # noqa: PLC0415
    figure, (top, bottom) = pyplot.subplots(2, 1, figsize=(8, 7),
                                            sharex=True)
    for configuration, run in runs:
        label = f"{configuration}/{os.path.basename(run)}"
        steps, values = scalars(run, "lambda")
        if steps:
            top.plot(steps, values, label=label)
        steps, values = scalars(run, "sparsity/parameter")
        if steps:
            bottom.plot(steps, values, label=label)
    top.set_ylabel("lambda")
    top.set_yscale("log")
    bottom.set_ylabel("parameter sparsity (%)")
    bottom.set_xlabel("optimizer step")
    bottom.legend(fontsize=6, ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)


def plot_metric_vs_sparsity(runs, path):
    """Each task's test metric against parameter sparsity, per run."""
    import matplotlib  # noqa: PLC0415
    matplotlib.use("Agg")
    from matplotlib import pyplot  # noqa: PLC0415
    loaded = [(configuration, load(run)) for configuration, run in runs]
    columns = task_columns([config for _, (_, config) in loaded])
    figure, axes = pyplot.subplots(1, len(columns),
                                   figsize=(4 * len(columns), 3.6),
                                   squeeze=False)
    configurations = sorted({c for c, _ in loaded})
    colours = {c: f"C{i % 10}" for i, c in enumerate(configurations)}
    for axis, (name, task, metric, _) in zip(axes[0], columns):
        for configuration, (metrics, _) in loaded:
            if task in metrics["test"]:
                axis.scatter(metrics["sparsity"]["parameter_percent"],
                             metrics["test"][task][metric],
                             color=colours[configuration], label=configuration)
        axis.set_title(name, fontsize=9)
        axis.set_xlabel("parameter sparsity (%)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    figure.legend(unique.values(), unique.keys(), fontsize=7,
                  loc="lower center", ncol=min(len(unique), 6))
    figure.tight_layout(rect=(0, 0.1, 1, 1))
    figure.savefig(path, dpi=110)
    pyplot.close(figure)


def _median(values):
    return statistics.median(values) if values else None


def _seconds(value):
    return "-" if value is None else f"{value:.0f}"


def write_cost(runs, output_dir):
    """Table 6: per configuration, median training time, the median time of
    the runs it starts from or takes its mask from, the hyperparameter values
    tuned, and the total: (own + sources) x values tuned, since each tried
    value is a run of its own."""
    table = {}
    for configuration, run in runs:
        cost = run_dir.Run(run).cost or {}
        row = table.setdefault(configuration, {"seconds": [], "sources": [],
                                               "totals": [], "tuned": set()})
        if "train_seconds" not in cost:
            continue
        sources = (cost.get("source_train_seconds", 0.0)
                   + cost.get("mask_source_train_seconds", 0.0))
        tuned = cost.get("tuned_values", 1)
        row["seconds"].append(cost["train_seconds"])
        row["sources"].append(sources)
        row["totals"].append((cost["train_seconds"] + sources) * tuned)
        row["tuned"].add(tuned)
    buffer = io.StringIO()
    buffer.write("| configuration | runs | training time (s), median | "
                 "source runs (s), median | hyperparameter values tuned | "
                 "total (s), median |\n|---|---|---|---|---|---|\n")
    rows = []
    for configuration in sorted(table):
        row = table[configuration]
        seconds, sources, total = (_median(row[key]) for key in (
            "seconds", "sources", "totals"))
        tuned = ", ".join(str(t) for t in sorted(row["tuned"])) or "-"
        buffer.write(f"| {configuration} | {len(row['seconds'])} | "
                     f"{_seconds(seconds)} | {_seconds(sources)} | {tuned} | "
                     f"{_seconds(total)} |\n")
        rows.append((configuration, len(row["seconds"]), seconds, sources,
                     tuned, total))
    with open(os.path.join(output_dir, "cost.md"), "w") as f:
        f.write(buffer.getvalue())
    with open(os.path.join(output_dir, "cost.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["configuration", "runs", "train_seconds_median",
                         "source_seconds_median", "tuned_values",
                         "total_seconds_median"])
        writer.writerows(rows)
    return buffer.getvalue()


def main(argv):
    paths = argv[1:]
    if not paths:
        raise app.UsageError("Name at least one run or study directory.")
    runs = find_runs(paths)
    if not runs:
        sys.exit(f"report.py: error: no finished run (metrics.json) below "
                 f"{', '.join(paths)}.")
    output_dir = FLAGS.output_dir
    os.makedirs(output_dir, exist_ok=True)
    summary, getters = summarise(runs)
    print(write_tables(summary, getters, output_dir))
    if FLAGS.cost:
        print(write_cost(runs, output_dir))
    plot_profiles(runs, os.path.join(output_dir, "lambda_sparsity.png"))
    plot_metric_vs_sparsity(runs, os.path.join(output_dir,
                                               "metric_vs_sparsity.png"))


if __name__ == "__main__":
    define_flags()
    app.run(main)
