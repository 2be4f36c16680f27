"""One exception type for mistakes a user can fix; the CLI prints its message without a traceback."""


class UserError(Exception):
    """Bad input or options: the message says what is wrong and what to do."""
