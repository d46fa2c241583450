"""nearline: make AI feel instant at near-batch cost."""

__version__ = "0.1.0"
