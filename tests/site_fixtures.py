"""Small hand-made sites for the tests: flat-coloured people walking across a grey frame.

Every person has a colour of its own, so a crop's mean colour tells which box it was cut from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

GREY = (96, 96, 96)


@dataclass(frozen=True)
class Walker:
    pid: int
    track: int
    colour: tuple[int, int, int]
    first: int  # first frame (1-based)
    last: int
    x0: float  # left at the first frame
    dx: float  # pixels per frame
    top: float
    width: float
    height: float

    def box(self, frame: int) -> tuple[float, float, float, float]:
        return (self.x0 + self.dx * (frame - self.first), self.top, self.width, self.height)


def walkers(frames: int, width: int, height: int, people: int = 3, seed: int = 0) -> list[Walker]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(people):
        first = int(rng.integers(1, max(2, frames // 3)))
        out.append(
            Walker(
                pid=i + 1,
                track=10 + i,
                colour=(int(40 + 70 * i) % 256, int(200 - 50 * i) % 256, int(30 + 90 * i) % 256),
                first=first,
                last=frames,
                x0=float(rng.uniform(-10, width * 0.3)),
                dx=float(rng.uniform(0.5, 2.0)),
                top=float(height * 0.1 + 7 * i),
                width=width * 0.12,
                height=height * 0.6,
            )
        )
    return out


def draw(frame: int, people: list[Walker], width: int, height: int) -> np.ndarray:
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[:] = GREY
    for w in people:
        if not w.first <= frame <= w.last:
            continue
        left, top, bw, bh = w.box(frame)
        x0, y0 = max(0, int(np.floor(left))), max(0, int(np.floor(top)))
        x1, y1 = min(width, int(np.ceil(left + bw))), min(height, int(np.ceil(top + bh)))
        if x1 > x0 and y1 > y0:
            image[y0:y1, x0:x1] = w.colour
    return image


def mot_lines(people: list[Walker], frames: int, ids: str = "track") -> str:
    lines = []
    for frame in range(1, frames + 1):
        for w in people:
            if w.first <= frame <= w.last:
                left, top, bw, bh = w.box(frame)
                ident = w.track if ids == "track" else w.pid
                lines.append(f"{frame},{ident},{left:.2f},{top:.2f},{bw:.2f},{bh:.2f},1,-1,-1,-1")
    return "\n".join(lines) + "\n"


def make_camera(
    folder: Path,
    people: list[Walker],
    frames: int,
    width: int = 160,
    height: int = 120,
    video: bool = False,
    start: str | None = None,
    fps: int = 10,
    ext: str = ".png",
) -> None:
    """One camera: frames as an image sequence (``ext``) or an MPEG-4 video, tracks.txt, gt."""
    folder.mkdir(parents=True)
    if video:
        import av

        with av.open(str(folder / "video.mp4"), "w") as container:
            stream = container.add_stream("mpeg4", rate=fps)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"qscale": "2"}
            for frame in range(1, frames + 1):
                picture = av.VideoFrame.from_ndarray(draw(frame, people, width, height), "rgb24")
                container.mux(stream.encode(picture))
            container.mux(stream.encode())
        if start:
            (folder / "start.txt").write_text(start + "\n")
    else:
        (folder / "img1").mkdir()
        for frame in range(1, frames + 1):
            Image.fromarray(draw(frame, people, width, height)).save(
                folder / "img1" / f"{frame:06d}{ext}"
            )
        info = [
            "[Sequence]",
            f"name={folder.name}",
            "imDir=img1",
            f"frameRate={fps}",
            f"seqLength={frames}",
            f"imWidth={width}",
            f"imHeight={height}",
            f"imExt={ext}",
        ]
        if start:
            info.append(f"startTime={start}")
        (folder / "seqinfo.ini").write_text("\n".join(info) + "\n")
    (folder / "tracks.txt").write_text(mot_lines(people, frames))
    (folder / "gt").mkdir()
    (folder / "gt" / "gt.txt").write_text(mot_lines(people, frames, ids="pid"))
