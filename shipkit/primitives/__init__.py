"""The seed primitives."""
