"""How a config field describes itself: one `option(...)` per field.

A field's metadata is the single description of a hyperparameter: its help
text, allowed values and bounds. Sections validate every field from it
(`Section.__post_init__`), the flags are generated from it (`flags.py`), and
`--section.field=value` overrides parse with it (`parse_value`).
"""

import dataclasses
import typing

# Metadata keys.
HELP = "help"
CHOICES = "choices"
# Numeric bounds: `minimum <= value`, `above < value`, `value < below`,
# `value <= maximum`.
MINIMUM, ABOVE, BELOW, MAXIMUM = "minimum", "above", "below", "maximum"
# A field that says where things are (files, directories), not what the
# experiment is: left out of a run's identity.
LOCATION = "location"
# The flag name when it differs from the field name (e.g. `--sparsity` for
# `SparsityConfig.kind`).
FLAG = "flag"
# What a field needs to do anything, beyond its section being present: a
# sparse meta run (`sparse`) or one sparsity control (its name).
NEEDS = "needs"


def option(default, help, *, choices=None, minimum=None, above=None,
           below=None, maximum=None, location=False, flag=None, needs=None):
    """A config field: its default and how it is described and checked.

    Args:
        default: the value when none is given (a tuple for list fields).
        help: what the field does, as the flag's help text.
        choices: the allowed values, if it is an enumeration.
        minimum, above, below, maximum: numeric bounds (inclusive,
            exclusive, exclusive, inclusive); None values are not checked.
        location: the field names a place (not part of a run's identity).
        flag: the flag's name when it is not the field's.
        needs: what else the field needs to have an effect (`NEEDS`).
    """
    metadata = {HELP: help}
    for key, value in ((CHOICES, choices), (MINIMUM, minimum),
                       (ABOVE, above), (BELOW, below), (MAXIMUM, maximum),
                       (FLAG, flag), (NEEDS, needs)):
        if value is not None:
            metadata[key] = tuple(value) if key == CHOICES else value
    if location:
        metadata[LOCATION] = True
    return dataclasses.field(default=default, metadata=metadata)


def flag_name(field):
    """The command-line name of a field."""
    return field.metadata.get(FLAG, field.name)


def base_type(field):
    """`(type, is_list)` of a field: int, float, bool or str, and whether it
    holds a tuple of them."""
    kind = field.type
    if typing.get_origin(kind) is typing.Union:
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    if typing.get_origin(kind) is tuple:
        return typing.get_args(kind)[0], True
    return kind, False


def _scalar(kind, text, name):
    if kind is bool:
        lowered = text.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ValueError(f"--{name}={text}: expected true or false.")
    try:
        return kind(text.strip())
    except ValueError:
        wanted = "an integer" if kind is int else "a number"
        raise ValueError(f"--{name}={text}: expected {wanted}.") from None


def parse_value(field, text, name=None):
    """The value of a field from command-line text (`none` for an optional
    field's None, comma-separated items for a list)."""
    name = name or flag_name(field)
    kind, is_list = base_type(field)
    if text.strip().lower() == "none" and field.default is None:
        return None
    if is_list:
        return tuple(_scalar(kind, item, name) for item in text.split(","))
    if kind is str:
        return text
    return _scalar(kind, text, name)


def _show(value):
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return value


def check_field(section, field):
    """Raises ValueError when a field's value breaks its metadata."""
    value = getattr(section, field.name)
    if value is None:
        return
    meta, name = field.metadata, flag_name(field)
    if CHOICES in meta and value not in meta[CHOICES]:
        raise ValueError(f"--{name}={_show(value)}: expected one of "
                         f"{', '.join(map(str, meta[CHOICES]))}.")
    values = value if isinstance(value, tuple) else (value,)
    bounds = ((MINIMUM, lambda v, b: v >= b, ">="),
              (ABOVE, lambda v, b: v > b, ">"),
              (BELOW, lambda v, b: v < b, "<"),
              (MAXIMUM, lambda v, b: v <= b, "<="))
    for key, holds, sign in bounds:
        if key in meta and not all(holds(v, meta[key]) for v in values):
            raise ValueError(f"--{name}={_show(value)}: must be {sign} "
                             f"{meta[key]}.")


@dataclasses.dataclass(frozen=True)
class Section:
    """A frozen group of options; checks each field, then `check()`."""

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, list):
                object.__setattr__(self, field.name, tuple(value))
            check_field(self, field)
        self.check()

    def check(self):
        """Rules between fields (override)."""


def require(condition, message):
    """Raises ValueError(message) unless `condition`."""
    if not condition:
        raise ValueError(message)
