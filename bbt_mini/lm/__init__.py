"""Layer: lm."""
