"""The data layer's error (importable without numpy: the command line checks `--data` before loading any)."""


class DataError(Exception):
    """A dataset that cannot be read or fetched; the message names the file and what is wrong."""
