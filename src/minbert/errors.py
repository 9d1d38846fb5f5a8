"""One exception type for every mistake a user can make (bad file, bad config, bad checkpoint).

The CLI prints its message on one line and exits with status 2; anything else is a bug and keeps its traceback.
"""


class MinbertError(Exception):
    """A problem with the user's input, described well enough to fix without reading a traceback."""
