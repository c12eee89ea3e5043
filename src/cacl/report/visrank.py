"""Ranked-result pictures: queries chosen by their average precision, their top gallery matches.

The ranking is the evaluation's (``cacl.evaluation.network``): branch 1 features, squared Euclidean
distance, gallery images of the query's identity *and* camera removed, the order of
``np.argsort`` (ties as in the metrics); junk images are already dropped by the dataset readers.
The per-query average precision comes from :func:`cacl.evaluation.evaluate` itself
(``RetrievalResult.query_ap``), so "best" and "worst" mean exactly what mAP averages.

Pictures are drawn with PIL, one row per query: the query (gray border), then its top matches
with a green border for a true match and a red one for a false match, the rank and the distance
under each image. :func:`cell_box` gives the position of every bordered cell.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from cacl.data.types import ReidDataset, Sample
from cacl.errors import CaclError
from cacl.evaluation import RetrievalResult, evaluate
from cacl.evaluation.network import network_distances

log = logging.getLogger(__name__)

WHICH = ("best", "worst", "random")
MATCH_COLOUR = (0, 170, 0)
MISMATCH_COLOUR = (220, 0, 0)
QUERY_COLOUR = (110, 110, 110)
BACKGROUND = (255, 255, 255)
TEXT_COLOUR = (20, 20, 20)

BORDER, PAD, QUERY_GAP, MARGIN = 4, 10, 22, 8
TITLE_H, CAPTION_H, ROW_GAP = 18, 30, 10
FONT_SIZE = 11


class VisrankError(CaclError):
    """The ranked-result pictures cannot be made with these arguments."""


@dataclass(frozen=True)
class Ranking:
    """Query and gallery samples, their distance matrix and the evaluation result."""

    query: list[Sample]
    gallery: list[Sample]
    distmat: np.ndarray
    result: RetrievalResult

    @classmethod
    def from_distmat(
        cls, query: Sequence[Sample], gallery: Sequence[Sample], distmat: np.ndarray
    ) -> Ranking:
        """Score ``distmat`` with the Market-1501 protocol (CMC up to rank 50)."""
        q_pids, q_cams = _ids(query)
        g_pids, g_cams = _ids(gallery)
        result = evaluate(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=50)
        return cls(list(query), list(gallery), distmat, result)

    @property
    def query_ap(self) -> np.ndarray:
        """Average precision of every query (NaN for queries without a true match)."""
        assert self.result.query_ap is not None
        return self.result.query_ap


@dataclass(frozen=True)
class RankedQuery:
    """The top matches of one query: gallery indices, distances and true-match flags."""

    query: int
    ap: float
    gallery: np.ndarray
    distance: np.ndarray
    match: np.ndarray


def compute_ranking(
    network: torch.nn.Module,
    dataset: ReidDataset,
    *,
    height: int,
    width: int,
    device: torch.device | str = "cpu",
    batch_size: int = 128,
    workers: int = 0,
    progress: bool = True,
) -> Ranking:
    """Extract the query and gallery features with ``network`` (eval mode) and score them."""
    if not dataset.has_test_split:
        raise VisrankError(f"{dataset.name} has no query / gallery split to rank")
    distmat = network_distances(
        network,
        dataset,
        height=height,
        width=width,
        device=device,
        batch_size=batch_size,
        workers=workers,
        progress=progress,
    )
    return Ranking.from_distmat(dataset.query, dataset.gallery, distmat)


def choose_queries(ap: np.ndarray, which: str, n: int, seed: int = 0) -> np.ndarray:
    """Indices of ``n`` queries with a true match: highest AP first (``best``), lowest AP first
    (``worst``, ties by query index), or drawn at random with ``seed``."""
    if which not in WHICH:
        raise VisrankError(f"--which must be one of {', '.join(WHICH)}, got {which!r}")
    if n < 1:
        raise VisrankError(f"the number of queries must be at least 1, got {n}")
    valid = np.flatnonzero(~np.isnan(ap))
    if which == "random":
        rng = np.random.default_rng(seed)
        return rng.choice(valid, size=min(n, len(valid)), replace=False)
    key = -ap[valid] if which == "best" else ap[valid]
    return valid[np.argsort(key, kind="stable")[:n]]


def top_matches(ranking: Ranking, queries: Sequence[int], top: int) -> list[RankedQuery]:
    """The ``top`` first gallery images of each query after the same-identity-same-camera rule."""
    if top < 1:
        raise VisrankError(f"--top must be at least 1, got {top}")
    q_pids, q_cams = _ids(ranking.query)
    g_pids, g_cams = _ids(ranking.gallery)
    rows = []
    for q in queries:
        dist = ranking.distmat[q]
        order = np.argsort(dist)  # the evaluation's order, ties included
        removed = (g_pids[order] == q_pids[q]) & (g_cams[order] == q_cams[q])
        kept = order[~removed][:top]
        rows.append(
            RankedQuery(
                query=int(q),
                ap=float(ranking.query_ap[q]),
                gallery=kept,
                distance=dist[kept].astype(np.float64),
                match=g_pids[kept] == q_pids[q],
            )
        )
    return rows


# ---------------------------------------------------------------------------- drawing


def cell_box(row: int, col: int, cell: tuple[int, int] = (128, 64)) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)`` (exclusive ends) of the bordered cell ``col`` of picture row ``row``:
    column 0 is the query, column ``k`` its rank-``k`` match. The border is ``BORDER`` pixels."""
    cell_h, cell_w = cell
    outer_w, outer_h = cell_w + 2 * BORDER, cell_h + 2 * BORDER
    x0 = MARGIN if col == 0 else MARGIN + outer_w + QUERY_GAP + (col - 1) * (outer_w + PAD)
    y0 = MARGIN + row * _row_height(cell) + TITLE_H
    return x0, y0, x0 + outer_w, y0 + outer_h


def _row_height(cell: tuple[int, int]) -> int:
    return TITLE_H + cell[0] + 2 * BORDER + CAPTION_H + ROW_GAP


def render_rows(
    rows: Sequence[RankedQuery],
    query: Sequence[Sample],
    gallery: Sequence[Sample],
    cell: tuple[int, int] = (128, 64),
) -> Image.Image:
    """One picture row per ranked query (see the module docstring); returns an RGB image."""
    if not rows:
        raise VisrankError("no query to draw")
    top = max(1, max(len(r.gallery) for r in rows))
    x1 = cell_box(0, top, cell)[2]
    width, height = x1 + MARGIN, MARGIN + len(rows) * _row_height(cell)
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = _font()
    for r, row in enumerate(rows):
        q = query[row.query]
        title = (
            f"query {Path(q.path).name}  |  id {q.pid}  |  camera {q.camid + 1}  |  AP {row.ap:.3f}"
        )
        draw.text((MARGIN, cell_box(r, 0, cell)[1] - TITLE_H + 2), title, TEXT_COLOUR, font)
        _draw_cell(canvas, draw, font, cell_box(r, 0, cell), q.path, QUERY_COLOUR, [("query", "")])
        for k, (g, d, m) in enumerate(zip(row.gallery, row.distance, row.match), start=1):
            colour = MATCH_COLOUR if m else MISMATCH_COLOUR
            lines = [(f"#{k}", "true" if m else "false"), ("dist", f"{d:.3f}")]
            _draw_cell(canvas, draw, font, cell_box(r, k, cell), gallery[g].path, colour, lines)
    return canvas


def _draw_cell(
    canvas: Image.Image,
    draw: ImageDraw.ImageDraw,
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
    box: tuple[int, int, int, int],
    path: str,
    colour: tuple[int, int, int],
    caption: list[tuple[str, str]],
) -> None:
    """Bordered picture at ``box``; each caption line: left text, right-aligned text."""
    x0, y0, x1, y1 = box
    draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=colour)
    size = (x1 - x0 - 2 * BORDER, y1 - y0 - 2 * BORDER)
    try:
        with Image.open(path) as img:
            picture = img.convert("RGB").resize(size, Image.BICUBIC)
    except OSError as exc:
        log.warning("cannot read %s: %s", path, exc)
        picture = Image.new("RGB", size, (200, 200, 200))
    canvas.paste(picture, (x0 + BORDER, y0 + BORDER))
    for i, (left, right) in enumerate(caption):
        y = y1 + 2 + i * (FONT_SIZE + 3)
        draw.text((x0, y), left, TEXT_COLOUR, font)
        draw.text((x1 - draw.textlength(right, font=font), y), right, TEXT_COLOUR, font)


# ---------------------------------------------------------------------------- files

CSV_FIELDS = (
    "order",
    "query",
    "query_pid",
    "query_cam",
    "query_ap",
    "rank",
    "gallery",
    "gallery_pid",
    "gallery_cam",
    "distance",
    "match",
)


def write_csv(
    path: str | os.PathLike,
    rows: Sequence[RankedQuery],
    query: Sequence[Sample],
    gallery: Sequence[Sample],
    root: str | os.PathLike | None = None,
) -> None:
    """One line per (query, rank): file names relative to ``root`` (when under it), distance,
    and whether the match is true. Cameras are 1-based, as in the file names."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_FIELDS)
        for order, row in enumerate(rows, start=1):
            q = query[row.query]
            for rank, (g, d, m) in enumerate(zip(row.gallery, row.distance, row.match), 1):
                s = gallery[g]
                writer.writerow(
                    [
                        order,
                        _relative(q.path, root),
                        q.pid,
                        q.camid + 1,
                        f"{row.ap:.6f}",
                        rank,
                        _relative(s.path, root),
                        s.pid,
                        s.camid + 1,
                        f"{d:.6f}",
                        int(bool(m)),
                    ]
                )


@dataclass(frozen=True)
class VisrankOutput:
    """What :func:`write_visrank` wrote."""

    rows: list[RankedQuery]
    pictures: list[Path]
    csv: Path


def write_visrank(
    ranking: Ranking,
    output: str | os.PathLike,
    *,
    which: str = "best",
    n: int = 20,
    top: int = 10,
    seed: int = 0,
    root: str | os.PathLike | None = None,
    cell: tuple[int, int] = (128, 64),
) -> VisrankOutput:
    """Choose ``n`` queries, write one PNG per query (``001_<query name>.png`` in the chosen
    order) and ``ranked.csv`` into ``output``."""
    queries = choose_queries(ranking.query_ap, which, n, seed)
    if len(queries) == 0:
        raise VisrankError("no query has a true match in the gallery: nothing to rank")
    rows = top_matches(ranking, queries, top)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    pictures = []
    for order, row in enumerate(rows, start=1):
        path = output / f"{order:03d}_{Path(ranking.query[row.query].path).stem}.png"
        render_rows([row], ranking.query, ranking.gallery, cell).save(path)
        pictures.append(path)
    csv_path = output / "ranked.csv"
    write_csv(csv_path, rows, ranking.query, ranking.gallery, root)
    return VisrankOutput(rows=rows, pictures=pictures, csv=csv_path)


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=FONT_SIZE)  # Pillow >= 10.1 with FreeType
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def _ids(samples: Sequence[Sample]) -> tuple[np.ndarray, np.ndarray]:
    return np.array([s.pid for s in samples]), np.array([s.camid for s in samples])


def _relative(path: str, root: str | os.PathLike | None) -> str:
    if root is None:
        return path
    try:
        return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return path
