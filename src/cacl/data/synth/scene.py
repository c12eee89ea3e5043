"""The plan of a synthetic site: who walks where and when, every box, and the tracker's faults.

Pure functions of a :class:`SiteConfig` and a seed (:func:`plan_site`); the pixels are
:mod:`cacl.data.synth.scene_render`'s. People walk routes through the cameras: the time from
leaving camera ``i`` to entering camera ``j`` is drawn around a mean of the pair (the transit
times, recorded in ``site.json``); in a camera a person crosses the frame at one depth, so the box
grows with how near they walk. The ground truth is one track per visit (id = the person);
``tracks.txt`` is what a tracker makes of it at the configured fault rates (all scaled by
``faults``): missed boxes, box jitter, fragmented tracks, identity switches where two people
cross, and short false tracks on the background.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from cacl.boxes import pair_iou
from cacl.data.synth.plan import stream
from cacl.errors import CaclError

# stream keys of the site (kept apart from the crop generator's)
ROUTES, VISIT, FAULTS, TRANSIT, TEST, TEST_TIMES = 101, 102, 103, 104, 105, 106


@dataclass(frozen=True)
class SiteConfig:
    """Everything that, with the seed, determines a synthetic site."""

    num_cams: int = 4
    num_ids: int = 90  # people walking the site (training)
    num_test_ids: int = 50  # other people, only in the eval/ split
    test_images_per_cam: int = 6  # eval crops per test identity and camera it is seen in
    duration: float = 180.0  # seconds every camera records
    fps: float = 5.0
    width: int = 960
    height: int = 540
    visit_seconds: tuple[float, float] = (3.0, 7.0)
    cams_per_id: tuple[int, int] = (2, 4)
    transit_seconds: tuple[float, float] = (8.0, 40.0)  # range of the camera pairs' means
    # tracker faults (probabilities / rates), each scaled by ``faults``
    faults: float = 1.0
    miss: float = 0.05  # a box is not detected
    jitter: float = 0.03  # box noise, a share of the box height (sd)
    fragment: float = 0.15  # a track splits into a new id once
    switch: float = 0.3  # two tracks that cross swap ids
    false_per_minute: float = 2.0  # short false tracks per camera-minute
    jpeg_quality: int = 90

    def __post_init__(self) -> None:
        if not 2 <= self.num_cams <= 9:
            raise CaclError(f"a site needs 2 to 9 cameras, got {self.num_cams}")
        if self.num_ids < 1 or self.num_test_ids < 1:
            raise CaclError("a site needs people to walk it and people to test on")
        if self.faults < 0:
            raise CaclError(f"faults must be 0 or more, got {self.faults}")
        if self.cams_per_id[0] < 2 or self.cams_per_id[1] > self.num_cams:
            raise CaclError(f"cams_per_id {self.cams_per_id} must lie in 2..{self.num_cams}")

    @property
    def frames(self) -> int:
        return int(round(self.duration * self.fps))

    def rate(self, name: str) -> float:
        """A fault rate scaled by :attr:`faults` (probabilities capped at 1)."""
        value = getattr(self, name) * self.faults
        return value if name in ("jitter", "false_per_minute") else min(1.0, value)


PRESETS = {
    "site": SiteConfig(),
    "site-tiny": SiteConfig(
        num_cams=2,
        num_ids=10,
        num_test_ids=6,
        test_images_per_cam=3,
        duration=24.0,
        width=320,
        height=192,
        cams_per_id=(2, 2),
        transit_seconds=(2.0, 4.0),
        visit_seconds=(2.0, 4.0),
    ),
}


def site_config(preset: str = "site", **overrides) -> SiteConfig:
    if preset not in PRESETS:
        raise CaclError(f"unknown site preset {preset!r}; known: {', '.join(PRESETS)}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return dataclasses.replace(PRESETS[preset], **overrides)


@dataclass(frozen=True)
class Visit:
    """One person crossing one camera's view (one ground-truth track)."""

    pid: int  # 1-based
    cam: int  # 0-based
    start: float  # seconds on the site clock
    end: float
    feet: float  # y of the feet, pixels
    size: float  # box height at that depth, pixels
    leftwards: bool


def transit_means(cfg: SiteConfig, seed: int) -> np.ndarray:
    """``(C, C)`` mean seconds from leaving camera i to entering camera j (symmetric)."""
    rng = stream(seed, TRANSIT)
    low, high = cfg.transit_seconds
    means = rng.uniform(low, high, (cfg.num_cams, cfg.num_cams))
    means = np.triu(means, 1)
    return means + means.T


def plan_visits(cfg: SiteConfig, seed: int) -> list[Visit]:
    """Every person's route through the cameras, inside the recording."""
    means = transit_means(cfg, seed)
    h = cfg.height
    visits = []
    for pid in range(1, cfg.num_ids + 1):
        rng = stream(seed, ROUTES, pid)
        n_cams = int(rng.integers(cfg.cams_per_id[0], cfg.cams_per_id[1] + 1))
        route = rng.permutation(cfg.num_cams)[:n_cams]
        t = float(rng.uniform(0.0, cfg.duration * 0.45))
        for i, cam in enumerate(route):
            if i:
                mean = means[route[i - 1], cam]
                t += max(1.0, float(rng.normal(mean, 0.15 * mean)))
            length = float(rng.uniform(*cfg.visit_seconds))
            if t + length > cfg.duration:
                break
            feet = float(rng.uniform(0.55, 0.97)) * h
            size = (feet - 0.25 * h) * float(rng.uniform(0.85, 1.0))
            visits.append(Visit(pid, int(cam), t, t + length, feet, size, bool(rng.random() < 0.5)))
            t += length
    return visits


def test_times(cfg: SiteConfig, seed: int, pid: int, cams: list[int], per_cam: int) -> dict:
    """``{cam: [seconds of its per_cam images]}`` of an eval-split person seen in ``cams``:
    a route through them in random order with the training people's transit times (its own
    stream: the eval images' pixels do not depend on it)."""
    rng = stream(seed, TEST_TIMES, pid)
    means = transit_means(cfg, seed)
    route = [cams[i] for i in rng.permutation(len(cams))]
    t = float(rng.uniform(0.0, cfg.duration * 0.45))
    out = {}
    for i, cam in enumerate(route):
        if i:
            mean = means[route[i - 1], cam]
            t += max(1.0, float(rng.normal(mean, 0.15 * mean)))
        length = float(rng.uniform(*cfg.visit_seconds))
        out[cam] = sorted(float(v) for v in rng.uniform(t, t + length, per_cam))
        t += length
    return out


def frame_time(cfg: SiteConfig, frame: int) -> float:
    return (frame - 1) / cfg.fps


def visit_boxes(cfg: SiteConfig, visit: Visit) -> tuple[np.ndarray, np.ndarray]:
    """Frames (1-based) and boxes (left, top, width, height) of a visit; the person walks from
    one side of the frame (half outside) to the other."""
    first = int(np.ceil(visit.start * cfg.fps)) + 1
    last = min(int(np.floor(visit.end * cfg.fps)) + 1, cfg.frames)
    frames = np.arange(first, last + 1)
    if frames.size == 0:
        return frames, np.zeros((0, 4))
    width = 0.4 * visit.size
    share = (frames - 1 - visit.start * cfg.fps) / max(1e-9, (visit.end - visit.start) * cfg.fps)
    share = 1.0 - share if visit.leftwards else share
    centre = -0.25 * width + share * (cfg.width + 0.5 * width)
    boxes = np.stack(
        [
            centre - width / 2,
            np.full(frames.size, visit.feet - visit.size),
            np.full(frames.size, width),
            np.full(frames.size, visit.size),
        ],
        axis=1,
    )
    return frames, boxes


def ground_truth(cfg: SiteConfig, visits: list[Visit], cam: int) -> np.ndarray:
    """Rows ``frame, pid, left, top, width, height, visibility, visit`` of one camera, sorted by
    frame; visibility: the share of the box not covered by nearer people."""
    rows = []
    for v_index, v in enumerate(visits):
        if v.cam != cam:
            continue
        frames, boxes = visit_boxes(cfg, v)
        for f, b in zip(frames, boxes, strict=True):
            rows.append([f, v.pid, *b, 1.0, v_index, v.feet])
    if not rows:
        return np.zeros((0, 8))
    table = np.array(rows, dtype=np.float64)
    table = table[np.lexsort((table[:, 8], table[:, 0]))]
    for frame in np.unique(table[:, 0]):
        idx = np.flatnonzero(table[:, 0] == frame)
        for i in idx:
            covered = 0.0
            for j in idx:
                if table[j, 8] > table[i, 8]:  # nearer (feet lower in the frame)
                    covered += _overlap(table[i, 2:6], table[j, 2:6])
            table[i, 6] = max(0.0, 1.0 - min(1.0, covered))
    return table[:, :8]


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Share of box ``a`` covered by box ``b``."""
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    return max(0.0, x1 - x0) * max(0.0, y1 - y0) / max(1e-9, a[2] * a[3])


def tracker_output(cfg: SiteConfig, gt: np.ndarray, cam: int, seed: int) -> np.ndarray:
    """Rows ``frame, track, left, top, width, height, conf`` that a tracker would write for one
    camera's ground truth ``gt`` (see the module's docstring)."""
    rng = stream(seed, FAULTS, cam)
    track = np.zeros(len(gt), dtype=np.int64)
    visits = np.unique(gt[:, 7]).astype(np.int64) if len(gt) else np.zeros(0, np.int64)
    next_id = 1
    for v in visits:  # one id per visit, maybe fragmented once
        rows = np.flatnonzero(gt[:, 7] == v)
        track[rows] = next_id
        next_id += 1
        if rows.size > 4 and rng.random() < cfg.rate("fragment"):
            cut = int(rng.integers(2, rows.size - 1))
            track[rows[cut:]] = next_id
            next_id += 1
    # identity switches where two people cross: once per crossing (the first frame two visits'
    # boxes overlap), their ids swap from that frame on
    crossed: set[tuple[int, int]] = set()
    for frame in np.unique(gt[:, 0]):
        idx = np.flatnonzero(gt[:, 0] == frame)
        first, second = np.triu_indices(len(idx), 1)  # every pair, in the loops' order
        iou = pair_iou(gt[idx[first], 2:6], gt[idx[second], 2:6])
        for a, b, overlap in zip(first, second, iou):
            i, j = idx[a], idx[b]
            pair = (int(gt[i, 7]), int(gt[j, 7]))
            if pair in crossed or overlap <= 0.3:
                continue
            crossed.add(pair)
            if rng.random() < cfg.rate("switch"):
                ti, tj = track[i], track[j]
                later = gt[:, 0] >= frame
                swap_i, swap_j = later & (track == ti), later & (track == tj)
                track[swap_i], track[swap_j] = tj, ti
    boxes = gt[:, 2:6].copy()
    boxes += rng.normal(0.0, 1.0, boxes.shape) * cfg.rate("jitter") * gt[:, 5:6]
    conf = rng.uniform(0.5, 0.99, len(gt))
    keep = rng.random(len(gt)) >= cfg.rate("miss")
    out = [np.column_stack([gt[keep, 0], track[keep], boxes[keep], conf[keep]])]
    # false tracks on the background
    n_false = rng.poisson(cfg.rate("false_per_minute") * cfg.duration / 60.0)
    for _ in range(n_false):
        length = int(rng.integers(4, 12))
        first = int(rng.integers(1, max(2, cfg.frames - length)))
        size = float(rng.uniform(0.2, 0.5)) * cfg.height
        left = float(rng.uniform(0, cfg.width - 0.4 * size))
        top = float(rng.uniform(0, cfg.height - size))
        frames = np.arange(first, first + length)
        jitter = rng.normal(0.0, 2.0, (length, 2))
        rows = np.column_stack(
            [
                frames,
                np.full(length, next_id),
                left + jitter[:, 0],
                top + jitter[:, 1],
                np.full(length, 0.4 * size),
                np.full(length, size),
                rng.uniform(0.3, 0.7, length),
            ]
        )
        out.append(rows)
        next_id += 1
    table = np.concatenate(out)
    return table[np.lexsort((table[:, 1], table[:, 0]))]
