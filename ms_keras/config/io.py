"""A config as JSON (`config.json`, versioned) and dotted overrides.

`from_dict(to_dict(c)) == c`. Earlier versions read as what they meant:
version 1 had no sparsity control (its sparse meta runs are version 2's
`paper` mode); version 2 kept the runtime settings in `training` and
`sparsity` and recorded a `mode`, which version 3 derives.
"""

import dataclasses
import json

from ms_keras.config import choices
from ms_keras.config import sections
from ms_keras.config.experiment_config import SECTIONS
from ms_keras.config.experiment_config import ExperimentConfig
from ms_keras.config.schema import parse_value
from ms_keras.config.schema import require

CONFIG_VERSION = 3
_READABLE_VERSIONS = (1, 2, CONFIG_VERSION)
_RUNTIME_FIELDS = {f.name for f in dataclasses.fields(sections.RuntimeConfig)}


def to_dict(config):
    """The JSON-ready dict of `config`, with `version`."""
    payload = dataclasses.asdict(config)
    payload["version"] = CONFIG_VERSION
    # Derived from the sections; recorded for whoever reads the file.
    payload["mode"] = config.mode
    return _lists(payload)


def _lists(value):
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_lists(v) for v in value]
    return value


def _upgrade(payload, version):
    """A version 1 or 2 payload in version 3's layout."""
    payload = dict(payload)
    if version == 1 and payload.get("meta") and payload.get("sparsity"):
        payload["meta"] = {**payload["meta"],
                           "sparsity_control": choices.PAPER}
    runtime = {}
    for name in ("training", "sparsity"):
        if payload.get(name):
            section = dict(payload[name])
            for field in list(section):
                if field in _RUNTIME_FIELDS:
                    runtime[field] = section.pop(field)
            payload[name] = section
    payload["runtime"] = runtime
    return payload


def from_dict(payload):
    """Rebuilds (and so re-validates) a config written by `to_dict`.

    Raises:
        ValueError: for another version, unknown fields or invalid values.
    """
    payload = dict(payload)
    version = payload.pop("version", None)
    payload.pop("mode", None)
    require(version in _READABLE_VERSIONS,
            f"config version {version} is not one of "
            f"{', '.join(map(str, _READABLE_VERSIONS))} (written by another "
            "ms_keras).")
    if version != CONFIG_VERSION:
        payload = _upgrade(payload, version)
    try:
        for name, cls in SECTIONS.items():
            if payload.get(name) is not None:
                payload[name] = cls(**payload[name])
        return ExperimentConfig(**payload)
    except TypeError as e:
        raise ValueError(
            f"config has unknown or missing fields ({e}).") from None


def section_fields(name):
    """The fields of section `name` (`training`, `meta`, ...)."""
    return {f.name: f for f in dataclasses.fields(SECTIONS[name])}


def parse_override(text):
    """`("training", "learning_rate", "1e-4")` of `training.learning_rate=1e-4`
    (the leading dashes optional).

    Raises:
        ValueError: for a malformed override, an unknown section or field.
    """
    body = text.lstrip("-")
    key, equals, value = body.partition("=")
    section, dot, field = key.partition(".")
    require(equals and dot and section and field,
            f"{text}: expected --section.field=value, e.g. "
            "--training.learning_rate=1e-4.")
    require(section in SECTIONS,
            f"{text}: no section '{section}'; the sections are "
            f"{', '.join(SECTIONS)}.")
    require(field in section_fields(section),
            f"{text}: section '{section}' has no field '{field}'; its fields "
            f"are {', '.join(section_fields(section))}.")
    return section, field, value


def apply_overrides(config, overrides):
    """`config` with `--section.field=value` overrides applied.

    A section the config does not have (a dense run's `meta`) is created
    from its defaults, then re-validated with the rest.

    Args:
        config: an ExperimentConfig.
        overrides: texts like `training.learning_rate=1e-4`, in order.

    Raises:
        ValueError: for a bad override or a config it makes invalid.
    """
    changes = {}
    for text in overrides:
        section, field, value = parse_override(text)
        parsed = parse_value(section_fields(section)[field], value,
                             f"{section}.{field}")
        changes.setdefault(section, {})[field] = parsed
    payload = to_dict(config)
    for section, fields in changes.items():
        payload[section] = {**(payload.get(section) or {}), **fields}
    return from_dict(payload)


def read_partial(path):
    """The `{section: {field: value}}` (and `tasks`) of a JSON file: a run's
    config.json (any version) or any part of one (`--config=path`).

    Raises:
        ValueError: for a missing or unreadable file, or unknown keys.
    """
    try:
        with open(path) as f:
            payload = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"--config={path}: cannot read it ({e}).") from None
    require(isinstance(payload, dict),
            f"--config={path}: expected a JSON object.")
    if "version" in payload:
        try:
            payload = to_dict(from_dict(payload))
        except ValueError as e:
            raise ValueError(f"--config={path}: {e}") from None
        payload.pop("version")
        payload.pop("mode")
    known = {*SECTIONS, "tasks", "model_dir"}
    unknown = sorted(set(payload) - known)
    require(not unknown, f"--config={path}: unknown keys {unknown}; a config "
            f"has {', '.join(sorted(known))}.")
    return payload
