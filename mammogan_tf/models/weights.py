"""Weights by name: stable variable paths, name-keyed checkpoints, and checkpoint files on disk.

``variable_paths(model)`` names every variable of a Keras model by where it sits in the object
tree (attribute names, list positions, layer names of functional models, then the variable's own
short name), e.g. ``blocks/1/conv/kernel``. Unlike ``Variable.path`` these names do not depend on
how many layers the process created before, so a model built twice, in another process, or grown
by a progressive stage gets the same names for the same layers.

``NamedState`` saves and restores a flat ``{name: variable}`` dict with ``tf.train.Checkpoint``:
restoring matches by name, so a network that gained layers restores the ones it had (``partial``)
and a strict restore names the first missing, unexpected or mis-shaped variables.

This module is below both training and synthesis: synthesis resolves and reads checkpoints with it
without importing the training loop.
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Mapping

import keras
import tensorflow as tf

from mammogan_tf.errors import InputError

STATE_KEY = "state"


# ------------------------------------------------------------------------------ naming

def _is_node(value) -> bool:
    return isinstance(value, (keras.layers.Layer, keras.random.SeedGenerator))


def _children(obj):
    """(name, child) pairs of a layer: public attributes (sorted), then functional sub-layers by
    layer name, then seed generators."""
    for attr in sorted(vars(obj)):
        if attr.startswith("_"):
            continue
        value = vars(obj)[attr]
        if _is_node(value) or isinstance(value, keras.Variable):
            yield attr, value
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                if _is_node(item) or isinstance(item, keras.Variable):
                    yield f"{attr}/{i}", item
        elif isinstance(value, dict):
            for key in sorted(value, key=str):
                if _is_node(value[key]) or isinstance(value[key], keras.Variable):
                    yield f"{attr}/{key}", value[key]
    for layer in getattr(obj, "_layers", None) or []:
        yield f"layers/{layer.name}", layer
    for i, generator in enumerate(getattr(obj, "_seed_generators", None) or []):
        yield f"seed_generators/{i}", generator


def _own_variables(obj) -> list:
    if isinstance(obj, keras.random.SeedGenerator):
        return [obj.state]
    return list(getattr(obj, "_trainable_variables", [])) + list(getattr(obj, "_non_trainable_variables", []))


def variable_paths(model) -> dict[str, keras.Variable]:
    """``{stable path: variable}`` for every variable of ``model`` (see the module doc)."""
    names: dict[str, keras.Variable] = {}
    seen_nodes: set[int] = set()
    seen_variables: set[int] = set()

    def add(path: str, variable) -> None:
        if id(variable) in seen_variables:
            return
        seen_variables.add(id(variable))
        key, n = path, 1
        while key in names:
            key, n = f"{path}_{n}", n + 1
        names[key] = variable

    def visit(obj, prefix: str) -> None:
        if id(obj) in seen_nodes:
            return
        seen_nodes.add(id(obj))
        for variable in _own_variables(obj):
            add(f"{prefix}{variable.name}", variable)
        for name, child in _children(obj):
            if isinstance(child, keras.Variable):
                add(f"{prefix}{name}", child)
            else:
                visit(child, f"{prefix}{name}/")

    visit(model, "")
    for variable in getattr(model, "variables", []):  # anything the walk could not reach
        add(f"unnamed/{variable.path}", variable)
    return names


def optimizer_paths(optimizer, parameter_names: Mapping[str, keras.Variable]) -> dict[str, keras.Variable]:
    """``{name: variable}`` of an optimizer's state: ``iterations``, ``learning_rate`` and each
    slot as ``<parameter path>/<slot>`` (e.g. ``blocks/0/conv/kernel/momentums``), so that a
    network that gained parameters keeps the moments of the old ones."""
    names: dict[str, keras.Variable] = {}
    inner = getattr(optimizer, "inner_optimizer", None)
    if inner is not None:  # LossScaleOptimizer: the wrapped optimizer plus the loss scale
        names.update({f"inner/{k}": v for k, v in optimizer_paths(inner, parameter_names).items()})
    by_id = {id(v): name for name, v in parameter_names.items()}
    parameters = list(getattr(optimizer, "_trainable_variables", []))
    for attr in sorted(vars(optimizer)):
        value = vars(optimizer)[attr]
        if (attr != "_trainable_variables" and isinstance(value, (list, tuple)) and parameters
                and len(value) == len(parameters) and all(isinstance(v, keras.Variable) for v in value)):
            for parameter, slot in zip(parameters, value):
                names[f"{by_id.get(id(parameter), parameter.path)}/{attr.strip('_')}"] = slot
    claimed = {id(v) for v in names.values()}
    for variable in optimizer.variables:
        if id(variable) not in claimed:
            names.setdefault(variable.name, variable)
    return names


# ------------------------------------------------------------------------- save/restore

def _escape(name: str) -> str:
    return name.replace(".", "..").replace("/", ".S")


def _unescape(name: str) -> str:
    return re.sub(r"\.(.)", lambda m: {"S": "/", ".": "."}.get(m.group(1), m.group(0)), name)


def checkpoint_keys(prefix: str | os.PathLike) -> dict[str, list[int]]:
    """``{name: shape}`` of the values a ``NamedState`` checkpoint holds."""
    out = {}
    head, tail = f"{STATE_KEY}/", "/.ATTRIBUTES/VARIABLE_VALUE"
    for key, shape in tf.train.list_variables(str(prefix)):
        if key.startswith(head) and key.endswith(tail):
            out[_unescape(key[len(head):-len(tail)])] = list(shape)
    return out


class NamedState:
    """A flat ``{name: variable}`` training state, checkpointed by name.

    ``checkpoint`` is the ``tf.train.Checkpoint`` that ``tf.train.CheckpointManager`` saves.
    """

    def __init__(self, variables: Mapping[str, object]):
        self.variables = dict(variables)
        self.checkpoint = tf.train.Checkpoint(**{STATE_KEY: self.variables})

    def restore(self, prefix: str | os.PathLike, partial: bool = False) -> dict[str, list[str]]:
        """Restore by name from ``prefix``; returns ``{"restored", "new", "unused"}`` name lists.

        ``partial=False`` (resume): every name must be in the checkpoint and every checkpoint value
        used, else ``InputError`` naming the first differences. ``partial=True`` (a network that
        gained layers): names absent from the checkpoint keep their initial values. Shapes must
        always match.
        """
        stored = checkpoint_keys(prefix)
        if not stored:
            raise InputError(f"{prefix}: not a name-keyed checkpoint (written by mammogan_tf before "
                             "checkpoints were keyed by variable path?); retrain, or synthesize with the "
                             "version that wrote it")
        ours = {name: list(v.shape) for name, v in self.variables.items()}
        wrong = [f"{n} {stored[n]} != {ours[n]}" for n in ours if n in stored and stored[n] != ours[n]]
        new = sorted(set(ours) - set(stored))
        unused = sorted(set(stored) - set(ours))
        if wrong:
            raise InputError(f"{prefix}: shapes differ from the model: {', '.join(wrong[:3])}"
                             f"{' ...' if len(wrong) > 3 else ''}")
        if not partial and (new or unused):
            parts = []
            if new:
                parts.append(f"not in the checkpoint: {', '.join(new[:4])}{' ...' if len(new) > 4 else ''}")
            if unused:
                parts.append(f"only in the checkpoint: {', '.join(unused[:4])}{' ...' if len(unused) > 4 else ''}")
            raise InputError(f"{prefix}: the checkpoint does not match the model ({'; '.join(parts)})")
        self.checkpoint.read(str(prefix)).expect_partial()
        return {"restored": sorted(set(ours) & set(stored)), "new": new, "unused": unused}


def network_state(networks: Mapping[str, object]) -> dict[str, object]:
    """``{"<network>/<path>": variable}`` of several named networks."""
    return {f"{name}/{path}": v for name, net in networks.items() for path, v in variable_paths(net).items()}


def restore_network(network, prefix: str | os.PathLike, name: str) -> None:
    """Restore one network saved under ``name`` (e.g. ``ema_generator``) in a run checkpoint."""
    wanted = {f"{name}/{path}": v for path, v in variable_paths(network).items()}
    stored = checkpoint_keys(prefix)
    missing = sorted(set(wanted) - set(stored))
    if stored and missing:
        raise InputError(f"{prefix}: no values for {len(missing)} variables of '{name}' "
                         f"(e.g. {missing[0]}); was it written by another model config?")
    state = NamedState(wanted)
    state.restore(prefix, partial=True)


# -------------------------------------------------------------------------- files on disk

CHECKPOINT_DIR = "checkpoints"
BEST_DIR = "best"


def checkpoint_files(prefix: str | os.PathLike) -> list[Path]:
    """The files of one checkpoint ``prefix`` (``<prefix>.index``, ``<prefix>.data-*``), sorted."""
    prefix = Path(prefix)
    return sorted(p for p in prefix.parent.glob(prefix.name + ".*")
                  if p.name == prefix.name + ".index" or p.name.startswith(prefix.name + ".data-"))


def checkpoint_sha256(prefix: str | os.PathLike) -> str:
    """sha256 over the files of a checkpoint (name and bytes of each, in sorted order): the
    generator identity recorded in the provenance of every synthetic image."""
    files = checkpoint_files(prefix)
    if not files:
        raise InputError(f"{prefix}: no checkpoint files (.index/.data-*) here")
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name[len(Path(prefix).name):].encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def checkpoint_step(prefix: str | os.PathLike) -> int:
    """Step number encoded in a checkpoint prefix ``.../ckpt-<step>``."""
    match = re.search(r"-(\d+)$", str(prefix))
    if not match:
        raise InputError(f"{prefix}: not a checkpoint prefix of the form ckpt-<step>")
    return int(match.group(1))


def resolve_checkpoint(run_dir: str | os.PathLike, which: str = "best") -> str:
    """Checkpoint prefix for ``which``: ``best`` (``best/``), ``last`` (``checkpoints/``), a
    folder holding checkpoints (its latest), or a prefix path. Raises ``InputError``."""
    run_dir = Path(run_dir)
    if which in ("best", "last"):
        folder = run_dir / (BEST_DIR if which == "best" else CHECKPOINT_DIR)
        prefix = tf.train.latest_checkpoint(str(folder))
        if prefix is None:
            hint = (" (no metric was configured, or no evaluation scored: a contextual GAN whose lesions were all "
                    "discarded scores none)") if which == "best" else ""
            raise InputError(f"{folder}: no checkpoint{hint}; use --checkpoint last|best|PATH")
        return prefix
    path = Path(which)
    if path.is_dir():
        prefix = tf.train.latest_checkpoint(str(path))
        if prefix is None:
            raise InputError(f"{path}: no checkpoint in this folder")
        return prefix
    if not checkpoint_files(path):
        raise InputError(f"{path}: no checkpoint files (.index/.data-*); give best, last or a ckpt-<step> prefix")
    return str(path)
