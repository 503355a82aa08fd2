"""The project's own error types: one clear line for the user, never a deep torch traceback."""


class DreamdistError(Exception):
    """Base class; the CLI prints its message on one line and exits with status 2."""


class DistributionFileError(DreamdistError):
    """A distribution file is missing, truncated, foreign, or from a newer format version."""


class FingerprintMismatchError(DreamdistError):
    """A distribution is used with a different text encoder than the one it was trained on."""


class TemplateError(DreamdistError):
    """A prompt template has no/too many placeholders or does not fit in the context length."""


class MixError(DreamdistError):
    """Gaussians cannot be mixed (different shapes, negative weights)."""


class InputError(DreamdistError):
    """Bad user input (images folder, seed range, paths...)."""
