"""Helpers the container images run while they are built (see services/*/Dockerfile)."""
