"""Layer: methods."""
