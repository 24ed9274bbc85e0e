"""Layer: run."""
