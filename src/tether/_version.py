"""The package's version, in a leaf module so that any module may read it without
importing the package's public API (which imports nearly everything)."""

__version__ = "0.1.0"
