"""REST adapters of the project service."""
