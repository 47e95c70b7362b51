"""Upload checks: what is accepted, and the 4xx error (naming the file) for what is not."""
import io

import pytest
from image_fakes import image_bytes
from image_service.uploads import UploadedFile, UploadLimits, check_all, check_bytes, title_of
from mlstudio.common import errors

LIMITS = UploadLimits(max_bytes=4096, max_files=3, max_pixels=10_000)


def upload(name, data):
    return UploadedFile(name, io.BytesIO(data))


@pytest.mark.parametrize("fmt, content_type, extension", [
    ("JPEG", "image/jpeg", "jpg"),
    ("PNG", "image/png", "png"),
    ("WEBP", "image/webp", "webp"),
    ("BMP", "image/bmp", "bmp"),
])
def test_accepted_formats_get_their_type_from_the_bytes(fmt, content_type, extension):
    data = image_bytes(fmt, size=(12, 7))
    (checked,) = check_all([upload("photo.bin", data)], LIMITS)
    assert (checked.content_type, checked.extension) == (content_type, extension)
    assert (checked.width, checked.height, checked.size) == (12, 7, len(data))
    assert checked.read() == data
    assert len(checked.sha256) == 64


def expect(error_class, code, files, position_text):
    with pytest.raises(error_class) as caught:
        check_all(files, LIMITS)
    assert caught.value.code == code
    assert position_text in caught.value.message
    return caught.value


def test_an_empty_file_is_refused_by_name():
    expect(errors.InvalidArgument, "empty_file", [upload("good.png", image_bytes()), upload("empty.png", b"")], "file 2 ('empty.png')")


def test_a_non_image_is_refused_by_name():
    expect(errors.UnsupportedMediaType, "not_an_image", [upload("notes.txt", b"hello, not an image")], "'notes.txt'")


def test_an_image_of_another_format_is_refused():
    expect(errors.UnsupportedMediaType, "not_an_image", [upload("anim.gif", image_bytes("GIF"))], "'anim.gif'")


def test_a_truncated_image_is_unprocessable():
    data = image_bytes("JPEG", size=(60, 60))
    expect(errors.Unprocessable, "undecodable_image", [upload("cut.jpg", data[: len(data) // 2])], "'cut.jpg'")


def test_an_oversized_file_is_too_large():
    big = image_bytes("BMP", size=(40, 40))  # about 4.9 kB, over the 4096-byte limit
    assert len(big) > LIMITS.max_bytes
    expect(errors.PayloadTooLarge, "file_too_large", [upload("big.bmp", big)], "'big.bmp'")


def test_an_image_with_too_many_pixels_is_too_large():
    expect(errors.PayloadTooLarge, "too_many_pixels", [upload("wide.png", image_bytes("PNG", size=(200, 60)))], "'wide.png'")


def test_too_many_files_and_no_files_are_refused():
    with pytest.raises(errors.PayloadTooLarge) as caught:
        check_all([upload(f"{i}.png", image_bytes()) for i in range(4)], LIMITS)
    assert caught.value.code == "too_many_files"
    with pytest.raises(errors.InvalidArgument) as caught:
        check_all([], LIMITS)
    assert caught.value.code == "no_files"


class OneWayStream(io.RawIOBase):
    """A stream that cannot seek, like some WSGI inputs."""

    def __init__(self, data):
        self.inner = io.BytesIO(data)

    def readable(self):
        return True

    def seekable(self):
        return False

    def readinto(self, buffer):
        data = self.inner.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def test_a_stream_that_cannot_seek_is_checked_too():
    data = image_bytes("PNG")
    (checked,) = check_all([UploadedFile("x.png", OneWayStream(data))], LIMITS)
    assert checked.read() == data
    with pytest.raises(errors.PayloadTooLarge):
        check_all([UploadedFile("big.bmp", OneWayStream(image_bytes("BMP", size=(40, 40))))], LIMITS)


def test_bytes_from_grpc_get_the_same_checks():
    assert check_bytes(image_bytes("JPEG"), "frame", LIMITS).content_type == "image/jpeg"
    with pytest.raises(errors.UnsupportedMediaType):
        check_bytes(b"garbage", "frame", LIMITS)


@pytest.mark.parametrize("name, title", [
    ("cat.jpg", "cat.jpg"),
    ("C:\\Users\\me\\cat.jpg", "cat.jpg"),
    ("../../etc/passwd", "passwd"),
    ("bad\x00name\n.png", "badname.png"),
    ("", "image"),
    (None, "image"),
    ("a" * 300, "a" * 200),
])
def test_titles_come_from_the_file_name_without_paths(name, title):
    assert title_of(name) == title


# ---- frames from the video worker --------------------------------------------------------------

def scene_jpeg(size=(320, 240)) -> bytes:
    """A JPEG with structure (a bright square on dark), as a video frame has."""
    from PIL import Image, ImageDraw

    canvas = Image.new("RGB", size, (20, 20, 20))
    ImageDraw.Draw(canvas).rectangle((size[0] // 8, size[1] // 4, size[0] // 2, size[1] * 3 // 4), fill=(230, 230, 230))
    buffer = io.BytesIO()
    canvas.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


FRAME_LIMITS = UploadLimits(max_bytes=1 << 20, max_files=3, max_pixels=1 << 20)


def test_a_frame_is_checked_at_a_reduced_scale_and_gets_the_same_facts():
    from image_service import uploads
    from mlstudio.common.image_hash import PerceptualHash

    data = scene_jpeg()
    full, frame = check_bytes(data, "f", FRAME_LIMITS), uploads.check_frame(data, "f", FRAME_LIMITS)
    assert (frame.content_type, frame.width, frame.height, frame.size, frame.sha256) == \
        (full.content_type, full.width, full.height, full.size, full.sha256) == ("image/jpeg", 320, 240, len(data), full.sha256)
    assert PerceptualHash.decode(frame.phash).near(PerceptualHash.decode(full.phash))


def test_a_frame_is_decoded_at_one_eighth_and_an_upload_in_full(monkeypatch):
    from image_service import uploads

    decoded = []
    original = uploads.perceptual_hash
    monkeypatch.setattr(uploads, "perceptual_hash", lambda image: decoded.append(image.size) or original(image))
    uploads.check_frame(scene_jpeg(), "f", FRAME_LIMITS)
    check_bytes(scene_jpeg(), "f", FRAME_LIMITS)
    assert decoded == [(40, 30), (320, 240)]


def test_a_bad_frame_is_refused_as_an_upload_is():
    from image_service.uploads import check_frame

    data = scene_jpeg()
    with pytest.raises(errors.Unprocessable):
        check_frame(data[: len(data) // 2], "f", FRAME_LIMITS)
    with pytest.raises(errors.UnsupportedMediaType):
        check_frame(b"garbage", "f", FRAME_LIMITS)
    with pytest.raises(errors.PayloadTooLarge):
        check_frame(scene_jpeg((1200, 1000)), "f", FRAME_LIMITS)
    with pytest.raises(errors.InvalidArgument):
        check_frame(b"", "f", FRAME_LIMITS)
    assert check_frame(image_bytes("PNG"), "f", FRAME_LIMITS).content_type == "image/png"  # other formats: in full
