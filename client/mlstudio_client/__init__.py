"""ML Studio's Python client: `Client` (one method per REST route), its errors, and the saved
profile the `mlstudio` command line uses."""
from .client import Client, NotLoggedIn, image_files
from .errors import (ApiError, BadRequest, Conflict, Forbidden, NotFound, PayloadTooLarge, Unauthorized, Unavailable,
                     UnsupportedFile)

__all__ = ["Client", "NotLoggedIn", "image_files", "ApiError", "BadRequest", "Conflict", "Forbidden", "NotFound", "PayloadTooLarge",
           "Unauthorized", "Unavailable", "UnsupportedFile"]
