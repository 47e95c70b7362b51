"""REST adapters of the user service."""
