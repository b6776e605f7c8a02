"""models: Keras subclassed GAN networks and their config.

``models.config`` (ModelConfig, no TensorFlow), ``models.layers`` (shared blocks),
``models.dcgan``, ``models.acgan``, ``models.registry`` (``build_gan``, ``flops_per_image``).
Kept free of imports so that reading a config does not load TensorFlow.
"""
