"""Fixtures shared by every test package. Server helpers live in ``nearline.testing``."""
