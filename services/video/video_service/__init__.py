"""Video service: uploads videos, serves them for playback, and (in its worker process) splits
them into frames that a model labels and the image service stores."""
