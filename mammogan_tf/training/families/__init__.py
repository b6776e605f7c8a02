"""Model families the training loop can host: ``model.family`` -> ``Family`` subclass.

Adding a family is one module here plus one line in ``FAMILIES`` (and its model config class in
``mammogan_tf.models.registry.MODEL_CONFIGS``).
"""
from __future__ import annotations

from mammogan_tf.errors import ConfigError
from mammogan_tf.plugins import load_object

FAMILIES = {
    "dcgan": "mammogan_tf.training.families.dcgan:DCGANFamily",
    "acgan": "mammogan_tf.training.families.acgan:ACGANFamily",
    "contextual": "mammogan_tf.training.families.contextual:ContextualFamily",
    "cpggan": "mammogan_tf.training.families.cpggan:CPGGANFamily",
}


def family_class(name: str):
    """The ``Family`` subclass registered as ``name``."""
    if name not in FAMILIES:
        raise ConfigError(f"model.family: unknown family {name!r}; choose one of {', '.join(FAMILIES)}")
    return load_object(FAMILIES[name])


def make_family(model_config, train_config):
    """The family object of an experiment's ``model`` and ``train`` sections."""
    return family_class(model_config.family)(model_config, train_config)
