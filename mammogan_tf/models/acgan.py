"""Auxiliary-classifier GAN (Odena et al. 2017) in Frid-Adar et al.'s 2018 configuration.

The DCGAN networks with class conditioning added, not copied:

- ``ACGANGenerator((z, labels))``: a learned class embedding (B, E) is concatenated to z
  (``class_conditioning="concat"``) or multiplies z element-wise (``"multiply"``, E = L, as
  in the Keras ACGAN example) before the DCGAN generator.
- ``ACGANDiscriminator(images)``: the DCGAN trunk shared by two float32 dense heads:
  real/fake logits (B, 1) and class logits (B, num_classes).
"""
from __future__ import annotations

import keras
from keras import ops

from mammogan_tf.models.dcgan import DCGANDiscriminator, DCGANGenerator
from mammogan_tf.models.layers import register


@register
class ACGANGenerator(DCGANGenerator):
    """``(z (B, latent_dim) float32, labels (B,) int32 in [0, num_classes))
    -> images (B, S, S, C) float32 in [-1, 1]``.

    Embedding initialised N(0, 1), so an embedding has the scale of a normal z.
    """

    def __init__(self, num_classes: int = 2, class_embedding_dim: int | None = None,
                 class_conditioning: str = "concat", **kwargs):
        super().__init__(**kwargs)
        if class_conditioning not in ("concat", "multiply"):
            raise ValueError(f"class_conditioning {class_conditioning!r}: expected 'concat' or 'multiply'")
        if class_conditioning == "multiply" and class_embedding_dim not in (None, self.latent_dim):
            raise ValueError("class_embedding_dim must equal latent_dim for class_conditioning='multiply'")
        self.num_classes = num_classes
        self.class_embedding_dim = class_embedding_dim
        self.class_conditioning = class_conditioning
        self.embedding = keras.layers.Embedding(
            num_classes, class_embedding_dim or self.latent_dim,
            embeddings_initializer=keras.initializers.RandomNormal(stddev=1.0))

    def call(self, inputs, training=None):
        z, labels = inputs
        embedded = ops.cast(self.embedding(labels), z.dtype)
        if self.class_conditioning == "multiply":
            conditioned = z * embedded
        else:
            conditioned = ops.concatenate([z, embedded], axis=-1)
        return super().call(conditioned, training=training)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes,
                "class_embedding_dim": self.class_embedding_dim,
                "class_conditioning": self.class_conditioning}


@register
class ACGANDiscriminator(DCGANDiscriminator):
    """``images (B, S, S, C) in [-1, 1] -> (logits (B, 1), class_logits (B, num_classes))``,
    both float32."""

    def __init__(self, num_classes: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.class_logits = self.head(num_classes)

    def call(self, inputs, training=None):
        features = self.features(inputs, training)
        return (self.logit(features, training=training),
                self.class_logits(features, training=training))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}
