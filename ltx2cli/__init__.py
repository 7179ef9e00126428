"""ltx2: batch renderer for Lightricks' LTX-2 audio+video model."""

__version__ = "0.1.0"
