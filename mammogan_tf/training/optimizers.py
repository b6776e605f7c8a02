"""Adam whose update of each variable is one fused kernel.

``Adam`` is ``keras.optimizers.Adam`` (same hyperparameters, the same slot variables, so
checkpoints are unchanged, and the same update formula) but on TensorFlow each variable's update
is ``ResourceApplyAdam``, one pass over the variable, its two moments and the gradient, instead
of Keras' ten or so element-wise ops (each a pass over memory):

    m += (g - m) (1 - beta_1);  v += (g^2 - v) (1 - beta_2)
    var -= lr sqrt(1 - beta_2^t) / (1 - beta_1^t) * m / (sqrt(v) + epsilon)

AMSGrad, sparse gradients and other backends use Keras' own update.
"""
from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="mammogan_tf")
class Adam(keras.optimizers.Adam):
    """``keras.optimizers.Adam`` with a fused per-variable update (see the module doc)."""

    def update_step(self, gradient, variable, learning_rate):
        if (self.amsgrad or keras.backend.backend() != "tensorflow" or isinstance(gradient, tf.IndexedSlices)
                or not isinstance(variable, tf.Variable)):
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        index = self._get_variable_index(variable)
        m, v = self._momentums[index].value, self._velocities[index].value
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle, m=m.handle, v=v.handle, beta1_power=tf.pow(beta_1, step),
            beta2_power=tf.pow(beta_2, step), lr=tf.cast(learning_rate, dtype), beta1=beta_1, beta2=beta_2,
            epsilon=tf.cast(self.epsilon, dtype), grad=tf.cast(gradient, dtype))
