"""Layer: service."""
