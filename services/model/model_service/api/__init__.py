"""REST adapters of the model service."""
