"""Transformer encoder for text: token + position embeddings, one encoder block, pooling.

Padding (id 0) is masked explicitly: in self-attention (keys that are padding get no weight)
and in the average pooling. The course's mask code calls `tf.math.not_equal` on a symbolic
Keras 3 tensor and crashes; `keras.ops.not_equal` is the backend-neutral form.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from dlzoo.config.experiments import TransformerConfig
from dlzoo.errors import InvalidInput
from dlzoo.inputs import InputSpec
from dlzoo.models.common import model_input, output_layer
from dlzoo.models.keras_family import KerasFamily


@keras.saving.register_keras_serializable(package="dlzoo")
class TokenAndPositionEmbedding(layers.Layer):
    """Sum of a learned token embedding and a learned embedding of each position."""

    def __init__(self, sequence_length: int, vocab_size: int, embed_dim: int, **kwargs):
        super().__init__(**kwargs)
        self.sequence_length = sequence_length
        self.vocab_size = vocab_size
        self.embed_dim = embed_dim
        self.tokens = layers.Embedding(vocab_size, embed_dim, name="tokens")
        self.positions = layers.Embedding(sequence_length, embed_dim, name="positions")

    def call(self, inputs):
        positions = ops.arange(ops.shape(inputs)[-1])
        return self.tokens(inputs) + self.positions(positions)

    def get_config(self):
        return {
            **super().get_config(),
            "sequence_length": self.sequence_length,
            "vocab_size": self.vocab_size,
            "embed_dim": self.embed_dim,
        }


def build(config: TransformerConfig, spec: InputSpec) -> keras.Model:
    if spec.vocab_size is None or len(spec.shape) != 1:
        raise InvalidInput("the transformer family needs padded token ids (data such as imdb/vocab_20000)")
    inputs = model_input(spec)
    not_padding = ops.not_equal(inputs, 0)
    x = TokenAndPositionEmbedding(spec.shape[0], spec.vocab_size, config.embed_dim, name="embedding")(inputs)

    attention = layers.MultiHeadAttention(config.num_heads, key_dim=config.embed_dim, name="attention")(
        x, x, attention_mask=ops.expand_dims(not_padding, axis=1)
    )
    attention = layers.Dropout(config.block_dropout)(attention)
    x = layers.LayerNormalization(name="norm_attention")(layers.Add()([x, attention]))
    feed_forward = layers.Dense(config.ff_dim, activation="relu", name="ffn_hidden")(x)
    feed_forward = layers.Dense(config.embed_dim, name="ffn_out")(feed_forward)
    feed_forward = layers.Dropout(config.block_dropout)(feed_forward)
    x = layers.LayerNormalization(name="norm_ffn")(layers.Add()([x, feed_forward]))

    x = layers.GlobalAveragePooling1D(name="pool")(x, mask=not_padding)
    x = layers.Dropout(config.dropout)(x)
    outputs = output_layer(config.output_units, config.output_activation)(x)
    return keras.Model(inputs, outputs, name="transformer")


FAMILY = KerasFamily("transformer", TransformerConfig, build)
