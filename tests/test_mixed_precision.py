"""Mixed precision at model level: the DCGAN networks under ``mixed_bfloat16`` and
``mixed_float16`` (with a loss-scaled optimizer) give finite losses and gradients, and a first
training step whose outputs stay close to the same step in float32 from the same weights.
"""
import numpy as np
import pytest
import keras
import tensorflow as tf

from mammogan_tf.models.dcgan import DCGANDiscriminator, DCGANGenerator

SIZE, LATENT, BATCH = 16, 8, 4
# Tolerances on values of order 1: bfloat16 has an 8-bit mantissa (~4e-3 relative per op).
TOLERANCE = {"bfloat16": 0.08, "float16": 0.02}


def _models(policy: str):
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(policy)
    try:
        # kernel 5 -> the native transposed convs and the sub-pixel image layer; conv_transpose
        # projection -> the matmul stem.
        generator = DCGANGenerator(LATENT, SIZE, base_filters=8, max_filters=16, kernel_size=5,
                                   projection="conv_transpose")
        discriminator = DCGANDiscriminator(SIZE, base_filters=8, max_filters=16, num_layers=2)
        generator(np.zeros((2, LATENT), np.float32))
        discriminator(np.zeros((2, SIZE, SIZE, 1), np.float32))
    finally:
        keras.mixed_precision.set_dtype_policy(previous)
    return generator, discriminator


def _first_step(policy: str, weights=None):
    """One G forward + D loss + gradients and one optimizer update of G; returns values."""
    generator, discriminator = _models(policy)
    if weights is not None:
        generator.set_weights(weights[0])
        discriminator.set_weights(weights[1])
    optimizer = keras.optimizers.Adam(1e-3, beta_1=0.5)
    if policy == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    optimizer.build(generator.trainable_variables)
    z = tf.random.stateless_uniform((BATCH, LATENT), (0, 1), -1.0, 1.0)
    real = tf.random.stateless_uniform((BATCH, SIZE, SIZE, 1), (0, 2), -1.0, 1.0)
    with tf.GradientTape() as tape:
        fake = generator(z, training=True)
        logits = discriminator(tf.concat([real, fake], 0), training=True)
        loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(tf.ones_like(logits), logits))
        scaled = optimizer.scale_loss(loss) if policy == "mixed_float16" else loss
    grads = tape.gradient(scaled, generator.trainable_variables)
    optimizer.apply_gradients(zip(grads, generator.trainable_variables))
    after = generator(z, training=False)
    return {"fake": fake, "logits": logits, "loss": loss, "after": after,
            "grad": tf.concat([tf.reshape(tf.cast(g, tf.float32), [-1]) for g in grads], 0),
            "weights": (generator.get_weights(), discriminator.get_weights())}


@pytest.fixture(scope="module")
def reference():
    generator, discriminator = _models("float32")
    weights = (generator.get_weights(), discriminator.get_weights())
    return weights, _first_step("float32", weights)


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_mixed_first_step_is_finite_and_close_to_float32(precision, reference):
    weights, want = reference
    got = _first_step(f"mixed_{precision}", weights)
    generator, _ = _models(f"mixed_{precision}")
    assert generator.projection.compute_dtype == precision  # really computed in 16 bits
    assert got["fake"].dtype == tf.float32 and got["logits"].dtype == tf.float32  # float32 outputs
    for key in ("fake", "logits", "loss", "after", "grad"):
        assert bool(tf.reduce_all(tf.math.is_finite(got[key]))), key
    tol = TOLERANCE[precision]
    for key in ("fake", "logits", "loss", "after"):
        np.testing.assert_allclose(got[key].numpy(), want[key].numpy(), atol=tol, rtol=tol, err_msg=key)
    # Gradients (unscaled by the LossScaleOptimizer for float16) point the same way.
    cosine = tf.reduce_sum(got["grad"] * want["grad"]) / (tf.norm(got["grad"]) * tf.norm(want["grad"]))
    assert float(cosine) > 0.98
    # The update moved the generator's output (Adam's first step is lr-sized per weight).
    assert float(tf.reduce_max(tf.abs(got["after"] - got["fake"]))) > 1e-3
    # The variables stay float32 master weights.
    assert all(w.dtype == np.float32 for w in got["weights"][0])
