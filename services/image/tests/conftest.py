"""Fixtures of the image service's unit tests: a core wired to in-memory fakes (see
`image_fakes.build_world` for who owns what)."""
import pytest
from image_fakes import World, build_world


@pytest.fixture
def world() -> World:
    return build_world()
