"""The version of fsrf (one place; ``setup.py`` metadata and ``fsrf.__version__`` agree with it)."""

__version__ = "0.1.0"
