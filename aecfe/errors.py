"""Exceptions raised by aecfe. Every message names the offending file or label and the problem."""


class AecfeError(Exception):
    """Base class of every error aecfe raises on purpose."""


class InputError(AecfeError, ValueError):
    """Bad user input: an unreadable or odd image, an unknown label, a malformed annotation file."""


class StoreError(AecfeError):
    """A problem with an HDF5 cell store: wrong schema version, inconsistent lengths, missing stage."""
