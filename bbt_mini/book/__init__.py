"""Layer: book."""
