"""The one exception type the CLI turns into a one-line message and a non-zero exit."""


class SptInterpError(ValueError):
    """Bad input or an impossible request; its message is shown to the user as it is."""
