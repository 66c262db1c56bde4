"""Which flags apply to which run: what `--mode`, `--sparsity`,
`--sparsity_control` and `--pruning` select, and the checks that refuse a
flag given where it would do nothing (from each field's `needs`)."""

import dataclasses

from absl import flags

from ms_keras import config as config_lib
from ms_keras import tasks as tasks_lib
from ms_keras.config import schema

FLAGS = flags.FLAGS


def fields_of(cls, values, **overrides):
    """`cls(**{field: flag value})` for the fields that have a flag."""
    kwargs = {f.name: values[schema.flag_name(f)]
              for f in dataclasses.fields(cls)
              if schema.flag_name(f) in values}
    kwargs.update(overrides)
    return cls(**kwargs)


def sparsity_kind(values):
    """`--sparsity`, whose default depends on `--mode`: channel for a meta
    run (meta-sparsity), none for stl/mtl (dense)."""
    if values["sparsity"] is not None:
        return values["sparsity"]
    return config_lib.CHANNEL if values["mode"] == "meta" else config_lib.NONE


def sparse_meta(values):
    """Whether the flag values ask for a sparse meta run."""
    return values["mode"] == "meta" and sparsity_kind(values) != "none"


def prunes(values):
    """Whether `--pruning` is given (read from FLAGS where a validator's
    values do not hold it)."""
    value = values.get("pruning")
    if value is None and "pruning" in FLAGS:
        value = FLAGS["pruning"].value
    return value not in (None, "none")


def sparsity_control(values):
    """The sparsity control the flag values ask for (None: not a sparse
    meta run)."""
    if not sparse_meta(values):
        return None
    return values["sparsity_control"] or config_lib.TOLERANCE


def _where(section, needs):
    """Where a field of `section` with `needs` metadata takes effect."""
    if needs == config_lib.SPARSE or (section == "sparsity" and needs):
        return "--mode=meta with --sparsity=channel or unstructured"
    if needs:
        budget = " or to --pruning" if needs == config_lib.BUDGET else ""
        return f"--mode=meta --sparsity_control={needs}{budget}"
    return {"sparsity": "--sparsity=channel or unstructured",
            "meta": "--mode=meta only",
            "pruning": "--pruning=one_shot, iterative, progressive or "
                       "sparse_training"}[section]


def _applies(section, field, values):
    """Whether a field given on the command line takes effect."""
    needs = field.metadata.get(schema.NEEDS)
    control = sparsity_control(values)
    if needs == config_lib.BUDGET and prunes(values):
        return True  # the budgets are the pruning baselines' too
    present = {"sparsity": sparsity_kind(values) != config_lib.NONE,
               "meta": values["mode"] == "meta",
               "pruning": prunes(values)}[section]
    if not present:
        return False
    if needs == config_lib.SPARSE:
        return control is not None
    return needs is None or control == needs


def check_applicable(values):
    """Refuses a flag given where it would do nothing (one line)."""
    owners = {}
    for section in ("sparsity", "meta", "pruning"):
        for field in dataclasses.fields(config_lib.SECTIONS[section]):
            name = schema.flag_name(field)
            if name in FLAGS and name not in ("sparsity", "pruning"):
                owners.setdefault(name, []).append((section, field))
    for name, fields in owners.items():
        if not FLAGS[name].present or any(
                _applies(section, field, values) for section, field in fields):
            continue
        section, field = fields[0]
        got = f"--mode={values['mode']} --sparsity={sparsity_kind(values)}"
        if sparsity_control(values):
            got += f" --sparsity_control={sparsity_control(values)}"
        where = _where(section, field.metadata.get(schema.NEEDS))
        raise ValueError(f"--{name} applies to {where} (got {got})")


def check_meta(values):
    """The checks of the meta and sparsity flags together (a validator)."""
    if values["mode"] == "stl" and values["tasks"] and len(
            values["tasks"]) != 1:
        raise ValueError(f"--mode=stl trains one task; got "
                         f"{len(values['tasks'])} (tasks="
                         f"{','.join(values['tasks'])}).")
    check_applicable(values)
    lam = None if sparsity_kind(values) == "none" else values["lam"]
    config_lib.check_lambda_setting(values["mode"], lam)
    if values["mode"] != "meta" or prunes(values):
        return
    section = meta_section(values)
    count = (len(values["tasks"]) if values["tasks"] else len(
        tasks_lib.get_dataset(values["dataset"]).tasks))
    bound = config_lib.sampler_bound(section.episode_sampler)
    if bound is not None and not 1 <= bound <= count:
        raise ValueError(f"--episode_sampler={section.episode_sampler}: k "
                         f"must be in 1-{count} for {count} tasks.")


def meta_section(values):
    """The MetaConfig of `--mode=meta` flag values: a dense meta run has no
    sparsity control, and a sparsity control's fields are its own."""
    control = sparsity_control(values)
    overrides = {"sparsity_control": control}
    if control == config_lib.TOLERANCE and values[
            "quality_tolerance"] is None:
        overrides["quality_tolerance"] = config_lib.DEFAULT_QUALITY_TOLERANCE
    return fields_of(config_lib.MetaConfig, values, **overrides)
