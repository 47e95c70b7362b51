"""Static checks of the container and Kubernetes deployment (no container engine needed)."""
