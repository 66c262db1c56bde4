"""Every access ms_keras makes to Keras internals, in one place.

Keras 3 has no public accessor for an optimizer's per-variable state or for
the layer graph of a functional model. Each function here names what it
reads; `tests/test_keras_compat.py` checks each against the installed Keras,
so a release that renames one fails there, loudly, instead of silently
doing nothing (as SGD's momentum reset did: Keras' SGD keeps its momenta in
`momentums`, Adam in `_momentums`).
"""

# Per-variable optimizer state lists, each indexed like the variables the
# optimizer was built on: SGD (`momentums`), Adam/Nadam/AdamW/Lamb/Lion
# (`_momentums`, `_velocities`, `_velocity_hats` with amsgrad), RMSprop.
_SLOT_LISTS = ("momentums", "_momentums", "_velocities", "_velocity_hats")


def base_optimizer(optimizer):
    """The optimizer that keeps the state: the one a
    `keras.optimizers.LossScaleOptimizer` (mixed_float16) wraps."""
    return getattr(optimizer, "inner_optimizer", optimizer)


def variable_index(optimizer, variable):
    """The position of `variable` in the optimizer's state lists."""
    return base_optimizer(optimizer)._get_variable_index(variable)  # noqa: SLF001


def optimizer_slots(optimizer, variable):
    """Every state variable the optimizer keeps for `variable` (momenta,
    velocities), the ones shaped like it; empty for plain SGD.

    Raises:
        ValueError: when the optimizer is not built on `variable`.
    """
    optimizer = base_optimizer(optimizer)
    if not optimizer.built:
        raise ValueError("The optimizer is not built yet; it has no state.")
    index = variable_index(optimizer, variable)
    slots = []
    for name in _SLOT_LISTS:
        state = getattr(optimizer, name, None)
        if state and state[index] is not None:
            slots.append(state[index])
    return slots


def adam_velocity(optimizer, variable):
    """Adam's second-moment estimate `v` of `variable`."""
    optimizer = base_optimizer(optimizer)
    return optimizer._velocities[variable_index(optimizer, variable)]  # noqa: SLF001


def inbound_layers(layer):
    """The layers whose outputs `layer` reads in its (first) call."""
    node = layer._inbound_nodes[0]  # noqa: SLF001
    return [t._keras_history.operation for t in node.input_tensors]  # noqa: SLF001


def outbound_layers(layer):
    """The layers that read `layer`'s output."""
    return [node.operation for node in layer._outbound_nodes]  # noqa: SLF001


def producer(tensor):
    """The layer that computed a symbolic Keras tensor."""
    return tensor._keras_history.operation  # noqa: SLF001


def set_leading_sublayers(owner, layers, dropped=()):
    """Makes `layers` `owner`'s first sublayers, in this order, and drops
    `dropped` from them (what its weights list and saving walk).

    Keras keeps every layer an attribute once held, even after the attribute
    is given another layer, and appends the new one at the end.
    """
    leading = [id(layer) for layer in layers]
    gone = {id(layer) for layer in dropped} - set(leading)
    tracked = owner._layers  # noqa: SLF001
    rest = [layer for layer in tracked
            if id(layer) not in gone and id(layer) not in leading]
    tracked[:] = list(layers) + rest
