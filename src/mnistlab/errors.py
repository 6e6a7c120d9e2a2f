"""The one exception type a user ever sees: its message is a whole sentence."""


class MnistlabError(Exception):
    """A problem the user can fix (bad file, bad flag, missing data).

    The CLI prints the message alone, without a traceback, and exits non-zero.
    """


class DataError(MnistlabError):
    """A dataset file is missing, truncated or malformed."""


class CheckpointError(MnistlabError):
    """A checkpoint cannot be read, is not ours, or does not fit the model."""
