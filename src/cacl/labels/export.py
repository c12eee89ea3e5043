"""``cacl labels export``: the labelled identities of an index as an evaluation split in the
Market-1501 layout.

Rules (:func:`plan_split`, pure):

- every identity of 2+ labelled images is exported; images nobody labelled are not (an unlabelled
  image may be anyone, so it cannot serve as a distractor);
- an image marked "not this person" that belongs to no identity is a distractor (``distractors``,
  the default): it joins the gallery as identity 0, Market-1501's distractors, and counts against
  every query that ranks it. These are the wrong results a person saw near the top, the hard
  negatives that a split of labelled identities alone lacks (it over-states the model: README,
  "Simulated labelling"); one that is in fact the unlabelled match of another identity counts
  against that identity's queries;
- an identity seen in 2+ cameras gives one query per camera (its first image there, by name), and
  all its other images go to the gallery; a query without a gallery image of its identity in
  another camera (Market-1501's evaluation ignores same-camera matches) goes to the gallery too,
  camera by camera until every query has one (two cameras of one image each: one query, one
  gallery image);
- an identity seen in one camera only goes to the gallery whole (it cannot be queried);
- no identity spanning two cameras: nothing to evaluate, a :class:`LabelError` that says so.

Files are named ``<id:04d>_c<camera>s1_<serial:06d>_00<ext>`` with identities numbered from 1 (0
for distractors) and cameras numbered 1..C in sorted order, copied (hard-linked where the file system allows) into a
temporary folder that is renamed to ``OUT`` when complete; ``OUT/split.json`` holds the summary
and where every file came from.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cacl.labels.store import LabelError, Labels

QUERY, GALLERY = "query", "bounding_box_test"


@dataclass(frozen=True)
class Exported:
    split: str  # query | bounding_box_test
    name: str  # the new file name
    source: str  # the indexed image name
    identity: int
    camera: int  # 1-based


def camera_numbers(cameras: Mapping[str, str | None]) -> dict[str, int]:
    """Camera name -> 1..C (numerically sorted when they are numbers)."""
    values = {c for c in cameras.values() if c is not None}
    key = lambda v: (0, int(v), "") if v.isdigit() else (1, 0, v)  # noqa: E731
    return {value: i + 1 for i, value in enumerate(sorted(values, key=key))}


def distractor_images(labels: Labels) -> list[str]:
    """Images of a "different" mark in force that belong to no identity, in the order marked."""
    out: dict[str, None] = {}
    for event in labels.events:
        if event.get("op") == "different":
            for image in (event["a"], event["b"]):
                if labels.identity(image) is None:
                    out.setdefault(image)
    return list(out)


def exported_images(labels: Labels, distractors: bool = True) -> list[str]:
    """Every image the split takes (the identities', then the distractors)."""
    images = [i for ident in labels.identities for i in ident.images]
    return images + (distractor_images(labels) if distractors else [])


def _file_name(pid: int, cam: int, serial: int, image: str) -> str:
    ext = Path(image).suffix.lower() or ".jpg"
    return f"{pid:04d}_c{cam}s1_{serial:06d}_00{ext}"


def plan_split(
    labels: Labels, cameras: Mapping[str, str | None], distractors: bool = True
) -> list[Exported]:
    """The files of the split (see the module's docstring); ``cameras``: image -> camera."""
    number = camera_numbers(cameras)
    extra = distractor_images(labels) if distractors else []
    images = [i for ident in labels.identities for i in ident.images] + extra
    missing = [i for i in images if cameras.get(i) is None]
    if missing:
        raise LabelError(
            f"{len(missing)} labelled images have no camera (e.g. {missing[0]}); an evaluation "
            "split needs the camera of every image (give cameras when indexing)"
        )
    out: list[Exported] = []
    serial = 0
    multi = 0
    for pid, identity in enumerate(labels.identities, start=1):
        by_camera: dict[int, list[str]] = {}
        for image in sorted(identity.images):
            by_camera.setdefault(number[cameras[image]], []).append(image)
        queries = (
            {cam: images[0] for cam, images in by_camera.items()} if len(by_camera) > 1 else {}
        )
        gallery_cams = Counter(cam for cam, images in by_camera.items() for _ in images[1:])
        for cam in sorted(queries):
            if not any(c != cam and n for c, n in gallery_cams.items()):
                del queries[cam]  # no match in another camera: it serves the gallery
                gallery_cams[cam] += 1
        multi += bool(queries)
        for cam, images in sorted(by_camera.items()):
            for image in images:
                serial += 1
                split = QUERY if queries.get(cam) == image else GALLERY
                out.append(Exported(split, _file_name(pid, cam, serial, image), image, pid, cam))
    for image in extra:
        serial += 1
        cam = number[cameras[image]]
        out.append(Exported(GALLERY, _file_name(0, cam, serial, image), image, 0, cam))
    if multi == 0:
        raise LabelError(
            f"no labelled identity spans two cameras ({len(labels.identities)} identities, all "
            "in one camera each): label matches across cameras before exporting"
        )
    return out


def summarize(files: list[Exported]) -> dict:
    identities = {f.identity for f in files if f.identity > 0}
    cams = Counter(len({f.camera for f in files if f.identity == i}) for i in identities)
    return {
        "identities": len(identities),
        "distractor_images": sum(f.identity == 0 for f in files),
        "queried_identities": len({f.identity for f in files if f.split == QUERY}),
        "query_images": sum(f.split == QUERY for f in files),
        "gallery_images": sum(f.split == GALLERY for f in files),
        "cameras_per_identity": {str(k): v for k, v in sorted(cams.items())},
    }


def write_split(
    files: list[Exported], resolve_path, out: str | os.PathLike, overwrite: bool = False
) -> dict:
    """Write ``files`` under ``out`` (``resolve_path(source) -> Path`` of an indexed image)."""
    out = Path(out).expanduser()
    if out.exists() and not overwrite:
        raise LabelError(f"{out} exists; give a new folder (or --overwrite)")
    tmp = out.with_name(out.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    for split in (QUERY, GALLERY):
        (tmp / split).mkdir(parents=True)
    for f in files:
        source, target = Path(resolve_path(f.source)), tmp / f.split / f.name
        if not source.is_file():
            shutil.rmtree(tmp, ignore_errors=True)
            raise LabelError(f"the labelled image {f.source} is missing ({source})")
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)
    summary = {**summarize(files), "files": [f.__dict__ for f in files]}
    (tmp / "split.json").write_text(json.dumps(summary, indent=1))
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return summary
