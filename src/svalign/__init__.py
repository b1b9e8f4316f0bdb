"""svalign: singular vectors of attention heads vs features."""

__version__ = "0.1.0"
