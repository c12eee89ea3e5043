"""The views of docs/method.md, "Views": the gray view is gray everywhere, the two training views
are drawn independently, the test transform is deterministic."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cacl.data.image_dataset import TwoViewDataset
from cacl.data.transforms import IMAGENET_MEAN, IMAGENET_STD, colour_view, gray_view
from cacl.data.transforms import test_transform as make_test_transform
from cacl.data.types import Sample

MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)


def picture(seed: int = 0, size: tuple[int, int] = (40, 90)) -> Image.Image:
    """A colourful RGB image whose left and right halves differ (flips are visible)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    pixels[:, : size[0] // 2, 0] = 250  # a red left half
    return Image.fromarray(pixels)


@pytest.mark.parametrize("erase_p", [0.0, 1.0])
def test_gray_view_has_three_equal_channels_before_normalisation(erase_p: float) -> None:
    torch.manual_seed(0)
    view = gray_view(64, 32, erase_p=erase_p, pad=4)
    for seed in range(8):
        pixels = view(picture(seed)) * STD + MEAN  # back to [0, 1] pixel space
        assert torch.allclose(pixels[0], pixels[1], atol=1e-5)
        assert torch.allclose(pixels[1], pixels[2], atol=1e-5)


def test_colour_view_erases_with_the_mean_colour() -> None:
    torch.manual_seed(0)
    pixels = colour_view(64, 32, erase_p=1.0, pad=4)(picture()) * STD + MEAN
    channels_differ = (pixels[0] - pixels[1]).abs() > 1e-3
    assert channels_differ.float().mean() > 0.5  # still a colour image


def test_the_two_views_are_drawn_independently(tmp_path) -> None:
    path = tmp_path / "a.png"
    picture().save(path)
    dataset = TwoViewDataset(
        [Sample(str(path), 0, 0)], colour_view(64, 32, erase_p=0, pad=0), gray_view(64, 32, 0, 0)
    )
    torch.manual_seed(0)
    same_flip = []
    for _ in range(40):
        item = dataset[0]
        # the red half tells the flip: compare which half is brighter in each view
        colour_left = item["colour"][0, :, :16].mean() > item["colour"][0, :, 16:].mean()
        gray = item["gray"] * STD + MEAN
        gray_left = gray[0, :, :16].mean() > gray[0, :, 16:].mean()
        same_flip.append(bool(colour_left == gray_left))
    assert 0.2 < np.mean(same_flip) < 0.8  # independent coins: about half agree


def test_test_transform_is_deterministic_resize_and_normalise() -> None:
    transform = make_test_transform(64, 32)
    image = picture()
    torch.manual_seed(0)
    first = transform(image)
    torch.manual_seed(1)
    assert torch.equal(first, transform(image))
    resized = image.resize((32, 64), Image.BICUBIC)
    expected = (torch.from_numpy(np.array(resized)).permute(2, 0, 1).float() / 255 - MEAN) / STD
    assert torch.allclose(first, expected, atol=0.03)  # PIL vs torchvision bicubic rounding
