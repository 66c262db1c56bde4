"""Meta-sparsity on your own model, tasks and data (README "Your own model").

    python examples/your_own_model.py
"""
import keras
import numpy as np
import tensorflow as tf

import ms_keras as msk

# Data: 32x32 noise images with a square of one of 10 colours (the class
# to predict) and a brightness to regress. Any tf.data pipeline of
# (images, {task name: target}) batches works.
rng = np.random.default_rng(0)
count = 1280
colours = rng.uniform(0.2, 1.0, (10, 3)).astype("float32")
label = rng.integers(0, 10, count)
brightness = rng.uniform(0.5, 1.5, count).astype("float32")
images = rng.uniform(0.0, 0.3, (count, 32, 32, 3)).astype("float32")
for i in range(count):
    top, left = rng.integers(0, 20, 2)
    images[i, top:top + 12, left:left + 12] = colours[label[i]]
images *= brightness[:, None, None, None]
targets = {"colour": label, "brightness": brightness[:, None]}
data = tf.data.Dataset.from_tensor_slices((images, targets))
train = data.take(1024).shuffle(1024, seed=0).batch(16)
validation = data.skip(1024).batch(64)

# Model: your functional backbone (any mix of Conv2D, depthwise/separable
# convs, batch norm, activations, padding, pooling, Add, Concatenate, gates)
# and a head model per task.
inputs = keras.Input((32, 32, 3))
x = keras.layers.Conv2D(16, 3, padding="same")(inputs)
x = keras.layers.BatchNormalization()(x)
x = keras.layers.ReLU()(x)
x = keras.layers.DepthwiseConv2D(3, strides=2, padding="same")(x)
x = keras.layers.BatchNormalization()(x)
x = keras.layers.ReLU()(x)
x = keras.layers.Conv2D(32, 1)(x)
x = keras.layers.BatchNormalization()(x)
x = keras.layers.ReLU()(x)
x = keras.layers.Conv2D(32, 3, padding="same")(x)
x = keras.layers.BatchNormalization()(x)
features = keras.layers.ReLU()(x)
backbone = keras.Model(inputs, features, name="backbone")


def head(units):
    return keras.Sequential([keras.Input(features.shape[1:]),
                             keras.layers.GlobalAveragePooling2D(),
                             keras.layers.Dense(units)])


model = msk.MultiTaskModel(backbone, {"colour": head(10),
                                      "brightness": head(1)})
tasks = [msk.Task("colour", loss=keras.losses.SparseCategoricalCrossentropy(
                      from_logits=True),
                  metrics=["sparse_categorical_accuracy"]),
         msk.Task("brightness", loss="mse", metrics=["mae"])]

# Meta-sparsity with a budget: half of the backbone's conv weights go; the
# meta-gradients decide which.
trainer = msk.MetaSparsityTrainer(model, tasks, sparsity_control="budget",
                                  target_sparsity=50, meta_batch_size=2)
# Any Keras optimizer; FusedAdam is Adam with TensorFlow's fused update.
trainer.compile(optimizer=msk.FusedAdam(3e-3))
trainer.fit(train, validation_data=validation, epochs=8, verbose=2)

report = msk.sparsity_report(model)
print({key: report[key] for key in ("parameter_percent", "group_percent",
                                    "flops_speedup")})
slim = msk.slim_model(model)
print("backbone parameters:", model.backbone.count_params(), "->",
      slim.backbone.count_params())
msk.export_model(slim, "runs/your_own_model_export",
                 formats=("saved_model", "tflite"))
