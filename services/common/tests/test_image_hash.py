"""The perceptual hash: structure from the difference hash, brightness beside it, and the
near-duplicate rule over both."""
import pytest

from mlstudio.common.image_hash import PerceptualHash, from_thumbnail


def flat(value):
    return [[value] * 9 for _ in range(8)]


def ramp(shift=0):
    return [[min(255, 20 * x + shift) for x in range(9)][::-1] for _ in range(8)]


def test_a_white_and_a_black_frame_share_the_dhash_but_are_not_near():
    white, black = from_thumbnail(flat(255)), from_thumbnail(flat(0))
    assert white.bits == black.bits == 0 and (white.brightness, black.brightness) == (255, 0)
    assert not white.near(black)


def test_the_same_structure_a_little_brighter_is_near_and_another_is_not():
    picture = from_thumbnail(ramp())
    assert picture.bits == (1 << 64) - 1  # each cell brighter than its right neighbour
    assert picture.near(from_thumbnail(ramp(shift=5)))
    assert not picture.near(from_thumbnail([row[::-1] for row in ramp()]))


def test_encoding_round_trips_and_bad_thumbnails_are_refused():
    picture = from_thumbnail(ramp())
    assert PerceptualHash.decode(picture.encode()) == picture and len(picture.encode()) == 18
    with pytest.raises(ValueError):
        from_thumbnail([[0] * 8] * 8)
