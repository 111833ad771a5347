"""alignkit: align pretrained language models with human intentions and values."""

__version__ = "0.1.0"
