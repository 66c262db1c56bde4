"""A meta-sparsity fit traces its train step once: epochs, validation and
the tolerance controller's probes reuse the first trace (a retrace costs a
second-order graph build, seconds to minutes)."""

import keras

import ms_keras as msk
from tests.test_api import dataset
from tests.test_api import handmade_backbone
from tests.test_api import make_tasks
from tests.test_api import model_of


def counting(trainer, name):
    """Counts the Python calls of `trainer.<name>`: inside a tf.function
    they happen only while tracing."""
    original = getattr(trainer, name)
    calls = []

    def wrapper(data):
        calls.append(1)
        return original(data)

    setattr(trainer, name, wrapper)
    return calls


def test_a_tolerance_fit_traces_its_steps_once_over_epochs_and_validation():
    model = model_of(handmade_backbone(8))
    trainer = msk.MetaSparsityTrainer(
        model, make_tasks(), sparsity_control="tolerance",
        quality_tolerance=5.0, meta_batch_size=2, inner_steps=1)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
    train_traces = counting(trainer, "train_step")
    test_traces = counting(trainer, "test_step")
    # 24 examples in batches of 4: every batch, and so every step, has the
    # same shapes.
    trainer.fit(dataset(8, count=24), validation_data=dataset(8, count=8,
                                                              seed=1),
                epochs=3, verbose=0)
    assert len(trainer.history.history["loss"]) == 3
    assert len(train_traces) == 1
    assert len(test_traces) == 1
