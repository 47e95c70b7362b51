"""`python -m mlstudio_client`: the `mlstudio` command line."""
from .cli import main

main()
