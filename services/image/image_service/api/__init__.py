"""REST adapters of the image service."""
