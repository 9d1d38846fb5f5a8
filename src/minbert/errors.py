"""One exception type for every mistake a user can make (bad file, bad config, bad checkpoint).

The CLI prints its message on one line and exits with status 2; anything else is a bug and keeps its traceback.
"""


class MinbertError(Exception):
    """A problem with the user's input, described well enough to fix without reading a traceback. Always one line:
    text quoted from a user's file (a header with a line break in it) cannot split the message."""

    def __str__(self) -> str:
        return " ".join(super().__str__().split())
