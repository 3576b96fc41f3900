"""trio-scheduler: a lock-free dispatch server for real-time speech translation."""

__version__ = "0.1.0"
