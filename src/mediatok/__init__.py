"""mediatok: discrete media tokenizers, token files and generators on one quantizer core."""

__version__ = "0.1.0"

__all__ = ["__version__"]
