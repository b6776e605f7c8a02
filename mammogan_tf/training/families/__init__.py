"""Model families the training loop can host: ``model.family`` -> ``Family`` subclass.

Adding a family is one module here plus one line in ``FAMILIES`` (and its model config class in
``mammogan_tf.models.registry.MODEL_CONFIGS``).
"""
from __future__ import annotations

import importlib

from mammogan_tf.errors import ConfigError

FAMILIES = {
    "dcgan": "mammogan_tf.training.families.dcgan:DCGANFamily",
    "acgan": "mammogan_tf.training.families.acgan:ACGANFamily",
    "contextual": "mammogan_tf.training.families.contextual:ContextualFamily",
    "cpggan": "mammogan_tf.training.families.cpggan:CPGGANFamily",
}


def family_class(name: str):
    """The ``Family`` subclass registered as ``name``."""
    try:
        module, attr = FAMILIES[name].split(":")
    except KeyError:
        raise ConfigError(f"model.family: unknown family {name!r}; choose one of {', '.join(FAMILIES)}") from None
    return getattr(importlib.import_module(module), attr)


def make_family(model_config, train_config):
    """The family object of an experiment's ``model`` and ``train`` sections."""
    return family_class(model_config.family)(model_config, train_config)
