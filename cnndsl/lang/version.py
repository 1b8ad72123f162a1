"""cnndsl's version: recorded in every artifact and model file it writes, and shown by `cnndsl --version`."""

__version__ = "0.1.0"
