"""REST adapters of the video service."""
