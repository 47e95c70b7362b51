"""Image service: a project's images in tag collections, their bytes in object storage, their
metadata in MongoDB, served to browsers through signed URLs."""
