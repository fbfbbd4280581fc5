"""The project's exceptions.

Every error a user can cause derives from :class:`IcetoolsError`; the CLI catches it at the
edge and prints its message as one line. Messages say what is wrong *and* what to do.
"""

from __future__ import annotations


class IcetoolsError(Exception):
    """Base class: a data or runtime problem the user can fix (exit code 1)."""


class InputFileError(IcetoolsError):
    """A file is missing, unreadable, corrupt or of an unknown format."""


class MissingVariableError(IcetoolsError):
    """A scene lacks a variable or band that the operation needs."""


class CRSError(IcetoolsError):
    """A CRS is missing, or two inputs cannot be brought onto the same grid."""


class EmptyInputError(IcetoolsError):
    """A vector layer has no features, or nothing overlaps the scene."""


class OutputExistsError(IcetoolsError):
    """The output exists and ``--overwrite`` was not given."""


class ConfigError(IcetoolsError):
    """An option, config file or model directory is inconsistent."""


class DataError(IcetoolsError):
    """Input values are unusable (non-numeric attribute, all-NaN scene, wrong band count...)."""


class OutputWriteError(IcetoolsError):
    """An output could not be written whole: the disk refused a write, or the file does not read back."""
