"""One exception type for every problem the user can fix.

The CLI prints ``error: <message>`` for it, with no traceback, and exits with code 2.
Messages are one line and name the file or value at fault.
"""


class CifarbenchError(Exception):
    """A bad input, a bad config or a missing file: something the user can act on."""
