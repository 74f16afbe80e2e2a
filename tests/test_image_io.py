"""The one image reader (ssd_edge.runtime.image_io): odd file names, corrupt bytes, absurd
headers and missing files end in an ImageError naming the file, never in a crash."""

import os
import struct
import subprocess
import sys
import textwrap
import zlib

import cv2
import numpy as np
import pytest

from ssd_edge.runtime.image_io import ImageError, check_image_file, read_image, shown_path

LATIN1_NAME = b"caf\xe9.png"  # 'café.png' as an old camera card writes it: not valid UTF-8


def _picture() -> np.ndarray:
    """A small BGR picture with distinct pixels, lossless through PNG."""
    return np.arange(6 * 5 * 3, dtype=np.uint8).reshape(6, 5, 3)


def _latin1_file(folder) -> str:
    """Write a PNG under a non-UTF-8 name; returns the name as Python's os functions give it."""
    ok, data = cv2.imencode(".png", _picture())
    assert ok
    raw = os.path.join(os.fsencode(folder), LATIN1_NAME)
    with open(raw, "wb") as handle:
        handle.write(data.tobytes())
    return os.fsdecode(raw)


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def test_reads_what_imread_reads(tmp_path):
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), _picture())
    image = read_image(path)
    assert image.dtype == np.uint8 and image.shape == (6, 5, 3)
    np.testing.assert_array_equal(image, cv2.imread(str(path), cv2.IMREAD_COLOR))
    np.testing.assert_array_equal(read_image(str(path)), image)


def test_non_utf8_file_name_is_read_without_crashing(tmp_path):
    # In a subprocess: cv2.imread on such a name dies of SIGSEGV, which would take pytest with it.
    path = _latin1_file(tmp_path)
    code = textwrap.dedent(f"""
        import os, numpy as np
        from ssd_edge.runtime.image_io import check_image_file, read_image
        path = os.fsdecode({os.fsencode(path)!r})
        check_image_file(path)
        image = read_image(path)
        np.save(os.path.join({str(tmp_path)!r}, "read.npy"), image)
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, f"rc {run.returncode}: {run.stderr[-2000:]}"
    np.testing.assert_array_equal(np.load(tmp_path / "read.npy"), _picture())


def test_non_utf8_name_of_a_corrupt_file_is_named_in_the_error(tmp_path):
    path = _latin1_file(tmp_path)
    with open(os.fsencode(path), "wb") as handle:
        handle.write(b"\x89PNG not really")
    code = textwrap.dedent(f"""
        import os
        from ssd_edge.runtime.image_io import ImageError, read_image
        try:
            read_image(os.fsdecode({os.fsencode(path)!r}))
        except ImageError as exc:
            print(exc)
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, f"rc {run.returncode}: {run.stderr[-2000:]}"
    assert "caf\\udce9.png: not a readable image" in run.stdout


def test_shown_path_escapes_bytes_that_are_not_utf8():
    assert shown_path(os.fsdecode(b"/x/caf\xe9.jpg")) == "/x/caf\\udce9.jpg"
    assert shown_path("/x/café.jpg") == "/x/café.jpg"


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ImageError, match=r"nope\.jpg: no such image file"):
        read_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageError, match="no such image file"):
        read_image(tmp_path)  # a folder is not an image file
    with pytest.raises(ImageError, match=r"nope\.jpg: no such image file"):
        check_image_file(tmp_path / "nope.jpg")


@pytest.mark.parametrize("content, reason", [
    (b"\xff\xd8\xff not really a jpeg", "unsupported format or corrupt file"),
    (b"", "empty file"),
])
def test_corrupt_bytes_are_refused_with_the_file_named(tmp_path, content, reason):
    path = tmp_path / "broken.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageError, match=rf"broken\.jpg: not a readable image \({reason}\)"):
        read_image(path)


def test_absurd_header_is_refused_cleanly(tmp_path):
    # A PNG claiming 100000 x 100000 pixels: OpenCV raises cv2.error, we name the file.
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    png = (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"\0" * 10))
           + _chunk(b"IEND", b""))
    path = tmp_path / "huge.png"
    path.write_bytes(png)
    with pytest.raises(ImageError, match=r"huge\.png: not a readable image \(OpenCV refused it") as caught:
        read_image(path)
    assert isinstance(caught.value.__cause__, cv2.error)


def test_check_image_file_refuses_a_format_opencv_does_not_read(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(ImageError, match=r"notes\.txt: not an image format OpenCV reads"):
        check_image_file(path)
    good = tmp_path / "a.png"
    cv2.imwrite(str(good), _picture())
    assert check_image_file(str(good)) == good
