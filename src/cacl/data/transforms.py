"""Image transforms (docs/method.md, "Views"): the colour view ``T(I)``, the gray view ``G(T'(I))`` and
the test transform. The two training views are drawn independently from the same family.
"""

from __future__ import annotations

from torchvision import transforms as T

# Every image is normalised with ImageNet's statistics; a backbone trained with another input
# convention converts inside the network (cacl.models.backbone.InputAdapter).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_MEAN_GRAY = 0.299 * IMAGENET_MEAN[0] + 0.587 * IMAGENET_MEAN[1] + 0.114 * IMAGENET_MEAN[2]
#: Random erasing's fill for the gray view: the ImageNet mean's luminance, normalised per channel.
GRAY_ERASE_VALUE = tuple((_MEAN_GRAY - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD))


def interpolation_mode(name: str) -> T.InterpolationMode:
    """torchvision's mode of ``bicubic`` / ``bilinear`` (a backbone's pretrained config)."""
    modes = {"bicubic": T.InterpolationMode.BICUBIC, "bilinear": T.InterpolationMode.BILINEAR}
    if name not in modes:
        raise ValueError(f"interpolation must be bicubic or bilinear, got {name!r}")
    return modes[name]


def _train_family(
    height: int, width: int, gray: bool, erase_p: float, pad: int, interpolation: str = "bicubic"
) -> T.Compose:
    steps = [
        T.Resize((height, width), interpolation=interpolation_mode(interpolation)),
        T.RandomHorizontalFlip(p=0.5),
        T.Pad(pad),
        T.RandomCrop((height, width)),
    ]
    if gray:
        steps.append(T.Grayscale(num_output_channels=3))
    steps += [
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        # After normalisation, 0 is the ImageNet mean colour; the gray view erases with the gray
        # of the same luminance instead, so that branch 2 never sees colour.
        T.RandomErasing(p=erase_p, value=GRAY_ERASE_VALUE if gray else 0),
    ]
    return T.Compose(steps)


def colour_view(
    height: int = 256,
    width: int = 128,
    erase_p: float = 0.5,
    pad: int = 10,
    interpolation: str = "bicubic",
) -> T.Compose:
    """Branch 1's view: resize, flip, pad (10) + random crop, normalise, random erasing."""
    return _train_family(height, width, False, erase_p, pad, interpolation)


def gray_view(
    height: int = 256,
    width: int = 128,
    erase_p: float = 0.5,
    pad: int = 10,
    interpolation: str = "bicubic",
) -> T.Compose:
    """Branch 2's view: the same family with 3-channel gray-scale before normalisation."""
    return _train_family(height, width, True, erase_p, pad, interpolation)


def test_transform(
    height: int = 256, width: int = 128, gray: bool = False, interpolation: str = "bicubic"
) -> T.Compose:
    """Resize (bicubic: the paper's; or the backbone's ``interpolation``) and normalise;
    ``gray`` converts to 3-channel gray-scale first."""
    steps = [T.Resize((height, width), interpolation=interpolation_mode(interpolation))]
    if gray:
        steps.append(T.Grayscale(num_output_channels=3))
    steps += [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return T.Compose(steps)


test_transform.__test__ = False  # not a pytest test, despite its name
