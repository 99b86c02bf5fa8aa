"""The lab's own error type: what it reports to its user in one line, never a bug."""


class LabError(ValueError):
    """Bad input, a bad option or a damaged record: the message names the file or field and what
    is wrong. A ValueError, so that older `except ValueError` readers keep working; the CLI and
    the dashboard catch only this (and OSError on the user's paths), so a bug keeps its
    traceback."""
