"""Image files are read at their true scale, or refused: 8- and 16-bit integers scale by their type's maximum,
float files must hold [0, 1], and 32-bit integer files (whose range is unknown) are named, by both readers (the
one of ``captum-ext explain`` and the one of the dataset driver)."""
import numpy as np
import pytest
import torch
from PIL import Image

from captum_ext.evaluation.data import read_image as read_dataset_image
from captum_ext.explain import read_image as read_explained_image

READERS = {"explain": lambda path: read_explained_image(path)[0], "dataset": read_dataset_image}


@pytest.fixture
def gray():
    return (np.random.default_rng(0).random((12, 10)) * 253).round()


@pytest.mark.parametrize("reader", sorted(READERS))
def test_8_and_16_bit_files_scale_by_their_maximum(tmp_path, gray, reader):
    Image.fromarray(gray.astype(np.uint8)).save(tmp_path / "g8.png")
    Image.fromarray((gray * 257).astype(np.uint16)).save(tmp_path / "g16.png")
    expected = torch.from_numpy(gray / 255.0).float().expand(3, -1, -1)
    for name in ("g8.png", "g16.png"):
        torch.testing.assert_close(READERS[reader](tmp_path / name), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("reader", sorted(READERS))
def test_a_float_file_in_0_1_is_read_as_it_is(tmp_path, gray, reader):
    """Before: the dataset reader converted it through 8-bit RGB, rounding every pixel to 0 or 1."""
    Image.fromarray((gray / 255.0).astype(np.float32), mode="F").save(tmp_path / "f.tif")
    expected = torch.from_numpy((gray / 255.0).astype(np.float32)).expand(3, -1, -1)
    torch.testing.assert_close(READERS[reader](tmp_path / "f.tif"), expected, atol=1e-7, rtol=0)


@pytest.mark.parametrize("reader", sorted(READERS))
@pytest.mark.parametrize("kind, pixels, words", [
    ("F", np.float32, r"holds float pixels in \[0, 253\], not in \[0, 1\]"),
    ("I", np.int32, r"holds 32-bit signed integer pixels, whose range is unknown"),
])
def test_files_of_unknown_scale_are_refused_naming_the_file(tmp_path, gray, reader, kind, pixels, words):
    """Before: explain read a float file of 0–253 as all-white and an int32 one as black, each explained with
    confidence; the dataset reader divided int32 pixels by 65535."""
    gray[0, 0] = 0.0
    gray[0, 1] = 253.0
    Image.fromarray(gray.astype(pixels), mode=kind).save(tmp_path / "odd.tif")
    with pytest.raises(ValueError, match=r"odd\.tif.*" + words):
        READERS[reader](tmp_path / "odd.tif")


def test_a_gray_and_alpha_file_is_read_as_gray(tmp_path):
    """Before: explain refused a PNG of mode "LA" ("must have 1, 3 or 4 channels, got 2")."""
    pixels = np.zeros((8, 6, 2), dtype=np.uint8)
    pixels[..., 0], pixels[..., 1] = np.arange(6)[None] * 40, 128
    Image.fromarray(pixels, "LA").save(tmp_path / "la.png")
    expected = torch.from_numpy(pixels[..., 0] / 255.0).float().expand(3, -1, -1)
    for reader in READERS.values():
        torch.testing.assert_close(reader(tmp_path / "la.png"), expected, atol=1e-6, rtol=0)
