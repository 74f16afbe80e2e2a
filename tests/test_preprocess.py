"""Preprocessing: the fast path (reused scratch buffers, contiguous planes) equals the plain
statement of the rule: bilinear resize of the whole image, BGR -> RGB, x / 255, NCHW."""

import threading

import cv2
import numpy as np
import pytest

from ssd_edge.runtime.preprocess import preprocess


def plain(image, size):
    resized = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    return (resized[:, :, ::-1].transpose(2, 0, 1) * np.float32(1 / 255)).astype(np.float32)


def images(rng):
    big = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    return [
        big,
        rng.integers(0, 256, (37, 53, 3), dtype=np.uint8),  # upscaled
        big[::3, 1::2],  # a strided view, not contiguous
        rng.integers(0, 256, (320, 320, 3), dtype=np.uint8),  # already the input size
    ]


@pytest.mark.parametrize("size", [(320, 320), (300, 300), (240, 320)])
def test_preprocess_equals_the_plain_rule(size):
    batch = images(np.random.default_rng(0))
    out = preprocess(batch, size)
    assert out.shape == (len(batch), 3, *size) and out.dtype == np.float32
    for got, image in zip(out, batch):
        np.testing.assert_array_equal(got, plain(image, size))


def test_threads_with_different_input_sizes_do_not_share_scratch():
    batch = images(np.random.default_rng(1))
    failures = []

    def work(size):
        for _ in range(20):
            out = preprocess(batch, size)
            if not all(np.array_equal(got, plain(image, size)) for got, image in zip(out, batch)):
                failures.append(size)

    threads = [threading.Thread(target=work, args=(size,)) for size in ((320, 320), (300, 300))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures


def test_an_image_the_scratch_buffers_do_not_fit_is_still_converted_from_itself():
    # preprocess() insists on uint8; preprocess_into() alone must not hand back the previous image.
    from ssd_edge.runtime.preprocess import preprocess_into

    out = np.empty((3, 64, 64), np.float32)
    preprocess_into(np.random.default_rng(2).integers(0, 256, (50, 70, 3), dtype=np.uint8), out)
    preprocess_into(np.full((50, 70, 3), 200.0, np.float32), out)
    np.testing.assert_allclose(out, 200.0 / 255.0, rtol=1e-6)


def test_images_are_checked_unless_the_caller_has_checked_them():
    # The Detector checks each image once (naming its index in the whole call) and tells
    # preprocess so; other callers get the check here.
    wrong = np.full((50, 70, 3), 200.0, np.float32)
    with pytest.raises(ValueError, match="image 0: expected dtype uint8"):
        preprocess([wrong], (64, 64))
    np.testing.assert_allclose(preprocess([wrong], (64, 64), checked=True), 200.0 / 255.0, rtol=1e-6)
