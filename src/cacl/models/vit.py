"""Vision Transformers for re-ID: position embeddings on a person-shaped grid, overlapping patches.

Pretrained ViTs come with position embeddings for a square grid (14 x 14 for patch 16 at 224 x
224; 37 x 37 for DINOv2's patch 14 at 518); re-ID feeds 256 x 128 or 128 x 64 crops, a 16 x 8 or
8 x 4 grid. :func:`resample_pos_embed` resizes the grid part of the embedding with bicubic
interpolation (the prefix tokens, CLS and registers, stay as they are) with timm's own
``resample_abs_pos_embed``; unlike timm's checkpoint filter, which takes the source grid to be
square, it infers a *non-square* source grid, which the LUPerson / TransReID-SSL checkpoints have
(trained at 256 x 128: 16 x 8).

TransReID's overlapping patches (``model.patch_stride``, e.g. 12 for patch 16): the patch
embedding's convolution keeps its 16 x 16 kernel and moves 12 pixels, so a 256 x 128 image gives a
21 x 10 grid instead of 16 x 8; :func:`set_patch_stride` changes the stride and resamples the
position embeddings to the new grid.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cacl.errors import CaclError


def infer_grid(num_tokens: int, target: tuple[int, int]) -> tuple[int, int]:
    """The (rows, cols) of a source grid of ``num_tokens`` positions: square when it is a square
    number, else the factorisation whose aspect ratio is closest to ``target``'s.

    >>> infer_grid(196, (16, 8)), infer_grid(128, (16, 8)), infer_grid(210, (16, 8))
    ((14, 14), (16, 8), (21, 10))
    """
    side = math.isqrt(num_tokens)
    if side * side == num_tokens:
        return side, side
    want = target[0] / target[1]
    pairs = [(r, num_tokens // r) for r in range(1, num_tokens + 1) if num_tokens % r == 0]
    return min(pairs, key=lambda rc: abs(math.log(rc[0] / rc[1] / want)))


def resample_pos_embed(
    pos_embed: torch.Tensor,
    new_grid: tuple[int, int],
    num_prefix_tokens: int = 1,
    old_grid: tuple[int, int] | None = None,
) -> torch.Tensor:
    """``pos_embed`` (1, prefix + rows * cols, D) resampled to ``new_grid`` (bicubic; the prefix
    tokens unchanged). ``old_grid`` defaults to :func:`infer_grid` of the token count."""
    if pos_embed.dim() != 3:
        raise CaclError(f"a position embedding is (1, tokens, dim), got {tuple(pos_embed.shape)}")
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    old_grid = old_grid or infer_grid(grid.shape[1], new_grid)
    if old_grid[0] * old_grid[1] != grid.shape[1]:
        raise CaclError(f"{grid.shape[1]} position tokens do not form a {old_grid} grid")
    if tuple(old_grid) == tuple(new_grid):
        return pos_embed
    from timm.layers import resample_abs_pos_embed

    resized = resample_abs_pos_embed(
        grid, list(new_grid), list(old_grid), num_prefix_tokens=0, interpolation="bicubic"
    )
    return torch.cat([prefix, resized.to(pos_embed.dtype)], dim=1)


def grid_size(image: tuple[int, int], patch: int, stride: int) -> tuple[int, int]:
    """Patch positions per axis of a ``patch`` x ``patch`` convolution moving ``stride`` pixels."""
    return tuple((side - patch) // stride + 1 for side in image)  # type: ignore[return-value]


def set_patch_stride(model: nn.Module, stride: int, image: tuple[int, int]) -> None:
    """Make a timm ViT's patch embedding move ``stride`` pixels (TransReID's overlapping
    patches) for ``image`` (height, width) input, resampling its position embeddings."""
    embed = model.patch_embed
    patch = embed.proj.kernel_size[0]
    if not 0 < stride <= patch:
        raise CaclError(f"model.patch_stride must be in 1..{patch} (the patch size), got {stride}")
    new = grid_size(image, patch, stride)
    old = tuple(embed.grid_size)
    embed.proj.stride = (stride, stride)
    embed.grid_size = new
    embed.num_patches = new[0] * new[1]
    if getattr(model, "pos_embed", None) is not None:
        prefix = 0 if getattr(model, "no_embed_class", False) else model.num_prefix_tokens
        with torch.no_grad():
            resized = resample_pos_embed(model.pos_embed.data, new, prefix, old)
        model.pos_embed = nn.Parameter(resized)
