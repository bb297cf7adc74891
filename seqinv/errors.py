"""User-facing errors: the CLI prints their message as one line and exits non-zero."""


class SeqInvError(Exception):
    """Base for every error caused by user input (files, options, weights).

    Messages say the value received, what was expected, and the fix.
    """


class InputError(SeqInvError):
    """A bad input volume or folder (missing, unreadable, wrong dimensionality, empty, NaN)."""


class ParameterError(SeqInvError, ValueError):
    """An option or sequence parameter outside its valid range."""


class WeightsError(SeqInvError):
    """Weights that cannot be found, fail their checksum, or do not match the architecture."""
