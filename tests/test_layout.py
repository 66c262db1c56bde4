"""The import graph of `ms_keras` only points down the documented layers
(README "Layout"): binaries -> experiment -> trainers -> meta/sparsity ->
models/objectives/data -> tasks -> config (a leaf: it imports nothing else
of ms_keras). A module may import its own layer or lower ones, never a
higher one."""

import ast
import os

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "ms_keras")

# Layer of each module or package, highest first.
LAYERS = (
    ("binaries", ("train", "evaluate", "finetune", "export", "flag_config",
                  "flag_checks", "flags", "launch")),
    ("api", ("__init__", "api")),
    ("experiment", ("experiment", "control_run", "results", "build",
                    "serving", "console", "exporting")),
    ("trainers", ("trainers",)),
    ("meta/sparsity", ("meta", "sparsity")),
    ("models/objectives/data", ("models", "losses", "metrics", "data",
                                 "task_kinds")),
    ("tasks", ("tasks", "run_dir", "runtime", "quiet_tf", "keras_compat")),
    ("config", ("config",)),
)
RANK = {name: rank for rank, (_, names) in enumerate(LAYERS)
        for name in names}


def _unit(module):
    """`ms_keras.trainers.multitask` -> `trainers`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path, module):
    tree = ast.parse(open(path).read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names
                      if a.name.startswith("ms_keras")}
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith("ms_keras"):
                if node.module == "ms_keras":
                    found |= {f"ms_keras.{a.name}" for a in node.names}
                else:
                    found.add(node.module)
    return found


def _modules():
    for root, _, names in os.walk(PACKAGE):
        for name in names:
            if name.endswith(".py"):
                path = os.path.join(root, name)
                relative = os.path.relpath(path, os.path.dirname(PACKAGE))
                yield relative[:-3].replace(os.sep, "."), path


def test_every_module_has_a_layer():
    units = {_unit(module) for module, _ in _modules()}
    assert units <= set(RANK), sorted(units - set(RANK))


def test_imports_never_point_up_the_layers():
    upward = []
    for module, path in _modules():
        rank = RANK[_unit(module)]
        for target in _imports(path, module):
            if RANK[_unit(target)] < rank:
                upward.append(f"{module} imports {target}")
    assert not upward, upward
