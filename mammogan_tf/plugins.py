"""Registries name their entries as ``"package.module:attribute"`` strings, so that nothing (above
all TensorFlow) is imported before an entry is used; ``load_object`` resolves one."""
from __future__ import annotations

import importlib


def load_object(spec: str):
    """The attribute that ``"package.module:attribute"`` names (importing its module)."""
    module, attribute = spec.split(":")
    return getattr(importlib.import_module(module), attribute)
