"""MobileNetV2 with a new head: transfer learning from ImageNet weights.

The model takes raw pixels at the data's native size and does its own resizing and scaling:
MobileNetV2 expects inputs in [-1, 1] (`mobilenet_v2.preprocess_input`), not [0, 1] as the
course feeds it. The base is frozen and called with training=False. That alone
does not keep BatchNormalization in inference mode once the base is unfrozen: Keras 3's `fit`
passes training=True down through nested functional models (keras-team/keras#20285), so phase 2
keeps every BatchNormalization layer frozen, which Keras 3 runs in inference mode.

The demo profile has no ImageNet weights offline: with `demo_weights: random` it trains the same
recipe from random weights (a smoke run of every step, named as such in MLflow), with `fail` it
refuses. The baseline trained from scratch is the `cnn` family's cats_dogs_scratch: MobileNetV2
from random weights stays at chance on 400 images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras
from keras import layers

from dlzoo.config.base import replace
from dlzoo.config.experiments import TrainSettings, TransferConfig
from dlzoo.errors import DlzooError, InvalidInput
from dlzoo.inputs import InputSpec
from dlzoo.models.common import model_input, output_layer
from dlzoo.models.family import Assets, Environment
from dlzoo.models.keras_family import KerasFamily
from dlzoo.records import SOURCE_FILE
from dlzoo.store import load_json

BASE_NAME = "base"


def build(config: TransferConfig, spec: InputSpec, weights_file: Path | None = None) -> keras.Model:
    """The transfer model; `weights_file` None builds the random-weights variant of the same graph."""
    if len(spec.shape) != 3 or spec.scale is None:
        raise InvalidInput("the transfer family needs raw images (height, width, channels) as inputs")
    size = config.image_size
    base = keras.applications.MobileNetV2(
        input_shape=(size, size, spec.shape[2]),
        include_top=False,
        weights=str(weights_file) if weights_file else None,
        name=BASE_NAME,
    )
    base.trainable = False
    inputs = model_input(spec)
    x = layers.Resizing(size, size, name="resize")(inputs)
    x = layers.Rescaling(1 / 127.5, offset=-1.0, name="to_minus_one_one")(x)
    x = base(x, training=False)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(config.dropout)(x)
    outputs = output_layer(config.output_units, config.output_activation)(x)
    name = "mobilenet_v2_transfer" if weights_file else "mobilenet_v2_transfer_random_weights"
    return keras.Model(inputs, outputs, name=name)


def unfreeze_from(model: keras.Model, first_layer: int) -> None:
    """Phase 2: layers of the base from `first_layer` on become trainable, earlier ones stay
    frozen, and BatchNormalization layers stay frozen so their ImageNet statistics are kept."""
    base = model.get_layer(BASE_NAME)
    base.trainable = True
    for index, layer in enumerate(base.layers):
        layer.trainable = index >= first_layer and not isinstance(layer, keras.layers.BatchNormalization)


@dataclass(frozen=True)
class TransferFamily(KerasFamily):
    def adapt(self, config: TransferConfig, settings: TrainSettings, environment: Environment, demo: bool):
        if not demo or config.demo_image_size == config.image_size:
            return config, None
        note = f"image_size {config.image_size} -> {config.demo_image_size} (demo profile: a smoke run)"
        return replace(config, image_size=config.demo_image_size), note

    def variant(self, config: TransferConfig, weights_file: Path | None) -> str | None:
        """What the run trains besides the recipe's name: the random-weights variant, if allowed."""
        if weights_file is not None:
            return None
        if config.demo_weights == "fail":
            raise DlzooError(
                "no ImageNet weights: the demo profile is offline and has none. Run the full profile "
                "(make full), or set the experiment's model.demo_weights: random to train the "
                "random-weights variant of the recipe"
            )
        return "random weights"

    def pretrained_weights(self, pretrained_dir: Path | None) -> Path | None:
        """The ImageNet weights file from the download stage, or None for random initial weights."""
        if pretrained_dir is None:
            return None
        source = load_json(pretrained_dir / SOURCE_FILE)
        if source.get("weights") != "imagenet":
            return None
        (file_name,) = source["files"]
        return pretrained_dir / file_name

    def build(self, config: TransferConfig, spec: InputSpec, assets: Assets) -> keras.Model:
        return build(config, spec, weights_file=assets.weights_file)


FAMILY = TransferFamily("transfer", TransferConfig, build, pretrained=True, unfreeze=unfreeze_from)
