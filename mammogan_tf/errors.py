"""Errors a user can cause. The CLI prints them as one line and exits non-zero.

Every message names the file, field or row at fault and says what to do.
"""


class MammoganError(Exception):
    """Base class of user-facing errors. ``exit_code`` is what the CLI returns."""

    exit_code = 1


class ConfigError(MammoganError):
    """A config file, a config field or a command-line argument is invalid (exit 2)."""

    exit_code = 2


class InputError(MammoganError):
    """An input file (image, annotation table, manifest) cannot be used (exit 2)."""

    exit_code = 2


class ImageReadError(InputError):
    """One image cannot be read; ``prepare`` records it in ``rejected.csv`` and goes on."""


class MissingDependencyError(MammoganError):
    """An optional package is needed (e.g. a DICOM pixel-data plugin); the message names it."""

    exit_code = 2


class TrainingError(MammoganError):
    """Training cannot go on (e.g. a non-finite loss); the last good checkpoint is kept."""

    exit_code = 1
