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


# EXIF orientation → how the stored pixels turn into the displayed image (the EXIF specification's eight cases).
DISPLAYED = {1: lambda a: a, 2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
             5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, -1), 7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
             8: lambda a: np.rot90(a, 1)}


def save_oriented(path, pixels: np.ndarray, orientation: int) -> None:
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = orientation
    image.save(path, exif=exif.tobytes())


@pytest.mark.parametrize("reader", sorted(READERS))
@pytest.mark.parametrize("orientation", range(1, 9))
def test_a_photos_exif_orientation_is_applied_as_viewers_show_it(tmp_path, reader, orientation):
    """Before: both readers gave the stored pixels, so boxes drawn on the displayed photo missed the object."""
    stored = np.zeros((6, 10, 3), dtype=np.uint8)
    stored[:2, :3] = 255  # a corner block, so every turn and flip lands elsewhere
    stored[..., 1] = np.arange(10)[None] * 20
    save_oriented(tmp_path / "photo.png", stored, orientation)
    expected = torch.from_numpy(DISPLAYED[orientation](stored).copy()).permute(2, 0, 1).float() / 255.0
    torch.testing.assert_close(READERS[reader](tmp_path / "photo.png"), expected, atol=1e-6, rtol=0)


def test_a_turned_photo_annotated_on_its_stored_pixels_is_named_with_the_reason(tmp_path):
    import json

    from captum_ext.evaluation import open_dataset

    (tmp_path / "img").mkdir()
    save_oriented(tmp_path / "img" / "turned.png", np.zeros((6, 10, 3), dtype=np.uint8), 6)
    document = {"images": [{"id": 1, "file_name": "turned.png", "height": 6, "width": 10}],
                "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 3, 3], "area": 9,
                                 "iscrowd": 0}],
                "categories": [{"id": 1, "name": "0"}]}
    (tmp_path / "ann.json").write_text(json.dumps(document))
    data = open_dataset(f"coco:{tmp_path / 'ann.json'}:{tmp_path / 'img'}")
    with pytest.raises(ValueError, match=r"turned\.png decodes to 10×6 pixels but is annotated as 6×10 \(sides "
                                         r"swapped: images are read turned by their EXIF orientation"):
        data[0]
    document["images"][0].update(height=10, width=6)  # the displayed photo's size: read as shown
    (tmp_path / "ann.json").write_text(json.dumps(document))
    assert open_dataset(f"coco:{tmp_path / 'ann.json'}:{tmp_path / 'img'}")[0].image.shape == (3, 10, 6)


def test_folder_datasets_size_a_turned_photo_as_shown(tmp_path):
    from captum_ext.evaluation import open_dataset

    (tmp_path / "3").mkdir()
    save_oriented(tmp_path / "3" / "turned.png", np.zeros((6, 10, 3), dtype=np.uint8), 8)
    data = open_dataset(f"folder:{tmp_path}")
    assert (data.entries[0].height, data.entries[0].width) == (10, 6) and data[0].image.shape == (3, 10, 6)


def test_a_cmyk_jpeg_is_read_in_its_colours_by_both_readers(tmp_path):
    """Before: ``explain`` read C, M, Y as R, G, B and showed (and classified) a colour negative."""
    rgb = np.zeros((16, 16, 3), dtype=np.uint8)
    rgb[:, :8] = (200, 30, 30)
    rgb[:, 8:] = (20, 60, 220)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=100)
    expected = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0
    for reader in READERS.values():
        assert float((reader(tmp_path / "cmyk.jpg") - expected).abs().mean()) < 0.03
