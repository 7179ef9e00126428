"""Weights on disk, whatever their layout: headers, the Lightricks single-file layout, what a path holds."""
