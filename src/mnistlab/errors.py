"""mnistlab's exceptions: the user sees their message alone, a whole sentence, never a traceback.

MnistlabError is the base; DataError, CheckpointError and preprocessing's NoDigitError narrow it
for callers that treat those cases apart (the server answers 422 for "no digit found", say).
"""


class MnistlabError(Exception):
    """A problem the user can fix (bad file, bad flag, missing data).

    The CLI prints the message alone, without a traceback, and exits non-zero.
    """


class DataError(MnistlabError):
    """A dataset file is missing, truncated or malformed."""


class CheckpointError(MnistlabError):
    """A checkpoint cannot be read, is not ours, or does not fit the model."""


def first_line(e: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message, cut to `limit` characters; its type's name when
    the message is empty (some libraries raise errors with no message at all)."""
    text = str(e).strip()
    return text.splitlines()[0][:limit] if text else type(e).__name__
