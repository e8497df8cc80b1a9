"""corral: immutable infrastructure for small teams."""

__version__ = "0.1.0"
