"""What a finished run records: its test and validation metrics, sparsity,
selection and control, its cost, its masks and the fingerprint of its
weights (`metrics.json`, `cost.json`, `sparsity_mask.npz`)."""

import hashlib
import os

import numpy as np

from ms_keras import config as config_lib
from ms_keras import build
from ms_keras import data as data_lib
from ms_keras import metrics as metrics_lib
from ms_keras import run_dir
from ms_keras import tasks as tasks_lib
from ms_keras.sparsity import control as control_lib
from ms_keras.sparsity import pruning as pruning_lib
from ms_keras.sparsity.stats import SparsityMeter


def evaluate_split(trainer, config, split):
    """Runs `trainer` over a whole split; returns `{task: {metric: v}}`."""
    batches = data_lib.load(config.data, tasks_lib.task_specs(config), split,
                            config.training.batch_size, training=False)
    logs = trainer.evaluate(batches, verbose=0, return_dict=True)
    grouped = metrics_lib.group_results(logs, trainer.task_names)
    grouped["loss"] = float(logs["loss"])
    return grouped



def fingerprint(trainer):
    """SHA-256 of the network's weights and lambda: equal exactly when two
    processes (replicas, workers, repeated runs) hold the same model."""
    digest = hashlib.sha256()
    for weight in trainer.network.weights:
        digest.update(np.ascontiguousarray(np.asarray(weight)).tobytes())
    if trainer.lam is not None:
        digest.update(np.asarray(trainer.lam.raw).tobytes())
    return digest.hexdigest()



def final_metrics(trainer, config):
    """The `metrics.json` payload: test and validation metrics of the kept
    checkpoint, its sparsity and lambda, and which epoch was kept."""
    metrics = {
        "fingerprint": fingerprint(trainer),
        "test": evaluate_split(trainer, config, "test"),
        "validation": evaluate_split(trainer, config, "validation"),
        "sparsity": SparsityMeter(trainer.network.backbone).measure(),
        "lambda": None if trainer.lam is None else float(trainer.lam.value()),
    }
    record = run_dir.read_json(run_dir.path(
        config.model_dir, run_dir.BEST_RECORD))
    if config.pruning:
        pruning = config.pruning
        metrics["pruning"] = {
            "method": pruning.method, "mask": pruning.pruning_mask,
            "target_percent": build.pruning_target(pruning),
            "achieved_percent": pruning_lib.parameter_percent(
                trainer.masks.masks()),
            "budget_from": pruning.budget_from,
            "mask_from": pruning.mask_from}
        if pruning.target_flops_speedup is not None:
            # The budget is in removed FLOPs: target_percent is their share.
            metrics["pruning"].update(
                measure="flops", target_flops_speedup=(
                    pruning.target_flops_speedup),
                achieved_flops_speedup=metrics["sparsity"]["flops_speedup"])
    metrics["selection"] = {
        "monitor": record["monitor"], "value": record["best"],
        "epoch": record["epoch"], "eligible": record.get("eligible", True),
        "parameter_sparsity_percent": metrics["sparsity"][
            "parameter_percent"],
        "lambda": metrics["lambda"]}
    if config.mode == "meta" and config.sparse:
        metrics["sparsity_control"] = control_record(config, metrics)
    if config.transfer:
        source = run_dir.read_json(run_dir.path(config.transfer.from_dir,
                                                run_dir.METRICS_FILE))
        metrics["init_from"] = {
            "model_dir": config.transfer.from_dir, "lambda": source["lambda"],
            "tasks": sorted(set(source["test"]) - {"loss"}),
            "train_scope": config.transfer.train_scope}
    return metrics



def control_record(config, metrics):
    """`metrics.json`'s `sparsity_control`: the mode, its constraint, and
    whether the kept checkpoint meets it (measured on validation)."""
    meta = config.meta
    control = meta.sparsity_control
    record = {"mode": control, "lambda_init": meta.lambda_init}
    if control == config_lib.PAPER:
        record["constraint"] = None
        return record
    if control == config_lib.BUDGET:
        if meta.target_flops_speedup is not None:
            target, achieved = meta.target_flops_speedup, metrics[
                "sparsity"]["flops_speedup"]
            record["constraint"] = {
                "measure": "flops_speedup", "target": target,
                "slack": control_lib.FLOPS_SLACK}
        else:
            target, achieved = meta.target_sparsity, metrics["sparsity"][
                "parameter_percent"]
            record["constraint"] = {
                "measure": "parameter_percent", "target": target,
                "slack": control_lib.PARAMETER_SLACK}
        record["achieved"] = float(achieved)
        record["holds"] = bool(abs(achieved - target) <= record["constraint"][
            "slack"])
        return record
    reference_dir = build.reference_run_dir(config)
    reference = build.reference_losses(reference_dir, config.tasks)
    validation = metrics["validation"]
    gaps = {task: float(100.0 * (validation[task]["loss"] / reference[i]
                                 - 1.0))
            for i, task in enumerate(config.tasks)}
    record["constraint"] = {
        "measure": "validation loss of every task against the finished "
                   "dense reference's",
        "tolerance_percent": meta.quality_tolerance,
        "reference_dir": reference_dir}
    record["quality_gap_percent"] = max(gaps.values())
    record["task_gap_percent"] = gaps
    record["holds"] = bool(
        record["quality_gap_percent"] <= meta.quality_tolerance)
    reference_metrics = run_dir.read_json(run_dir.path(
        reference_dir, run_dir.METRICS_FILE))
    record["reference_test"] = reference_metrics["test"]
    return record



def cost(config):
    """`cost.json`: training time (summed over resumes) and the tuned values;
    kept out of `metrics.json`, which is identical for identical runs."""
    record = {
        "train_seconds": run_dir.read_json(run_dir.path(
            config.model_dir, run_dir.TIME_RECORD))["train_seconds"],
        "tuned_values": config.runtime.tuned_values}
    # The runs this one starts from or takes its mask from are part of its
    # price (Table 6 charges one-shot pruning its dense training).
    sources = {
        "source_train_seconds": config.transfer and config.transfer.from_dir,
        "mask_source_train_seconds": (config.pruning
                                      and config.pruning.mask_from)}
    for key, source_dir in sources.items():
        source = source_dir and run_dir.path(source_dir, run_dir.COST_FILE)
        if source and os.path.exists(source):
            record[key] = run_dir.read_json(source)["train_seconds"]
    return record



def save_masks(trainer, path):
    """Writes `{conv name: bool kernel mask}` of the backbone to an .npz."""
    masks = SparsityMeter(trainer.network.backbone).masks()

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **masks)

    run_dir.atomic_write(path, write)
