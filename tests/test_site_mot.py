"""The MOTChallenge parser, its variants, and which boxes become crops (clipping, filters)."""

from __future__ import annotations

import numpy as np
import pytest

from cacl.data.site.mot import MotFormatError, read_mot, write_mot
from cacl.data.site.select import (
    DEGENERATE,
    DUPLICATE,
    LOW_CONF,
    NO_TRACK,
    PAST_END,
    TOO_SMALL,
    CropOptions,
    clip_boxes,
    select_boxes,
    spaced,
)
from cacl.errors import CaclError


def write(tmp_path, text, name="tracks.txt"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_motchallenge_comma_ten_columns(tmp_path):
    path = write(tmp_path, "1,3,10.5,20,30,60,0.9,-1,-1,-1\n2,3,11,21,30,60,0.8,-1,-1,-1\n\n")
    t = read_mot(path)
    assert t.variant == "motchallenge" and t.separator == "comma"
    assert t.frame.tolist() == [1, 2] and t.track.tolist() == [3, 3]
    np.testing.assert_allclose(t.box[0], [10.5, 20, 30, 60])
    np.testing.assert_allclose(t.conf, [0.9, 0.8])
    assert not t.detections_only


def test_six_columns_get_confidence_one(tmp_path):
    t = read_mot(write(tmp_path, "5,1,0,0,10,20\n"))
    assert t.conf.tolist() == [1.0]


def test_mot17_gt_keeps_considered_persons(tmp_path):
    # consider flag 0 dropped; class 3 (car) dropped; class 7 (static person) kept
    text = (
        "1,1,0,0,10,20,1,1,1.0\n"
        "1,2,0,0,10,20,0,1,0.5\n"
        "1,3,0,0,10,20,1,3,1.0\n"
        "2,4,0,0,10,20,1,7,0.25\n"
    )
    t = read_mot(write(tmp_path, text, "gt.txt"))
    assert t.variant == "mot17-gt"
    assert t.track.tolist() == [1, 4]
    assert t.conf.tolist() == [1.0, 1.0]  # the flag is not a confidence
    assert t.dropped == {"marked not to consider": 1, "not persons": 1}


def test_boxmot_whitespace_integer_conf_class_column(tmp_path):
    text = "1 7 100 50 40 80 1 0 -1 -1\n1 8 10 5 40 80 1 2 -1 -1\n2\t7  101 51 40 80 1 0 -1 -1\n"
    t = read_mot(write(tmp_path, text))
    assert t.variant == "boxmot" and t.separator == "whitespace"
    assert t.track.tolist() == [7, 7] and t.frame.tolist() == [1, 2]
    assert t.dropped == {"not persons": 1}


def test_detections_with_minus_one_ids(tmp_path):
    t = read_mot(write(tmp_path, "1,-1,0,0,10,20,0.9,-1,-1,-1\n2,-1,1,1,10,20,0.4,-1,-1,-1\n"))
    assert t.detections_only
    assert t.track.tolist() == [-1, -1]


@pytest.mark.parametrize(
    "line, says",
    [
        ("0,1,0,0,10,20,1,-1,-1,-1", "frame 0"),  # frames are 1-based
        ("1.5,1,0,0,10,20,1,-1,-1,-1", "frame 1.5"),
        ("1,1,0,0,10", "5 columns"),
        ("1,x,0,0,10,20,1,-1,-1,-1", "'x' is not a number"),
        ("1,-3,0,0,10,20,1,-1,-1,-1", "id -3"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path, line, says):
    path = write(tmp_path, f"1,1,0,0,10,20,1,-1,-1,-1\n# a comment\n{line}\n")
    with pytest.raises(MotFormatError) as info:
        read_mot(path)
    message = str(info.value)
    assert str(path) in message and "line 3" in message and says in message


def test_mixed_separators_are_an_error(tmp_path):
    with pytest.raises(MotFormatError, match="line 2"):
        read_mot(write(tmp_path, "1,1,0,0,10,20\n2 1 0 0 10 20\n"))


def test_write_then_read_round_trip(tmp_path):
    path = tmp_path / "out.txt"
    write_mot(path, [1, 2], [4, 5], [[1.25, 2, 3, 4], [5, 6, 7, 8]], [0.5, 1])
    t = read_mot(path)
    assert t.variant == "motchallenge"
    np.testing.assert_allclose(t.box, [[1.25, 2, 3, 4], [5, 6, 7, 8]])


def test_clip_boxes_against_pixel_loop():
    rng = np.random.default_rng(0)
    boxes = np.c_[rng.uniform(-50, 150, (200, 2)), rng.uniform(-5, 80, (200, 2))]
    width, height = 100, 60
    got = clip_boxes(boxes, width, height)
    for box, (x, y, w, h) in zip(boxes, got, strict=True):
        # the slow way: which pixel columns / rows does the box touch, inside the frame?
        if box[2] <= 0 or box[3] <= 0:
            assert w == 0 and h == 0
            continue
        cols = [c for c in range(width) if c + 1 > box[0] and c < box[0] + box[2]]
        rows = [r for r in range(height) if r + 1 > box[1] and r < box[1] + box[3]]
        assert w == len(cols) and h == len(rows)
        if cols:
            assert x == cols[0]
        if rows:
            assert y == rows[0]


def test_spaced_keeps_ends_and_count():
    assert spaced(10, 0).tolist() == list(range(10))
    assert spaced(10, 3).tolist() == [0, 4, 9] or spaced(10, 3).tolist() == [0, 5, 9]
    assert spaced(5, 9).tolist() == list(range(5))
    assert len(spaced(100, 7)) == 7


def test_select_boxes_filters_and_counts(tmp_path):
    text = "".join(
        [
            "1,1,10,10,20,40,0.9,-1,-1,-1\n",  # kept
            "2,1,10,10,20,40,0.1,-1,-1,-1\n",  # low confidence
            "3,1,500,10,20,40,0.9,-1,-1,-1\n",  # outside the frame
            "4,1,10,10,20,8,0.9,-1,-1,-1\n",  # too small
            "5,1,10,10,20,40,0.9,-1,-1,-1\n",  # kept
            "5,1,12,10,20,40,0.9,-1,-1,-1\n",  # duplicate of track 1 in frame 5
            "99,1,10,10,20,40,0.9,-1,-1,-1\n",  # past the end (length 50)
            "1,-1,10,10,20,40,0.9,-1,-1,-1\n",  # a detection without a track
            "1,2,90,50,20,40,0.9,-1,-1,-1\n",  # clipped to 10 x 10: kept with min_height 10
        ]
    )
    tracks = read_mot(write(tmp_path, text))
    options = CropOptions(min_conf=0.5, min_height=10)
    rows, boxes, skipped = select_boxes(tracks, options, width=100, height=60, length=50)
    assert tracks.frame[rows].tolist() == [1, 1, 5] and tracks.track[rows].tolist() == [1, 2, 1]
    assert boxes[1].tolist() == [90, 50, 10, 10]
    assert skipped == {
        LOW_CONF: 1,
        DEGENERATE: 1,
        TOO_SMALL: 1,
        DUPLICATE: 1,
        PAST_END: 1,
        NO_TRACK: 1,
    }


def test_every_and_max_per_track(tmp_path):
    lines = [f"{f},{t},0,0,10,20,1,-1,-1,-1\n" for t in (1, 2) for f in range(1, 21)]
    tracks = read_mot(write(tmp_path, "".join(lines)))
    rows, _, _ = select_boxes(tracks, CropOptions(every=3), 100, 100)
    assert sorted(tracks.frame[rows][tracks.track[rows] == 1].tolist()) == list(range(1, 21, 3))
    rows, _, _ = select_boxes(tracks, CropOptions(every=2, max_per_track=4), 100, 100)
    for track in (1, 2):
        frames = sorted(tracks.frame[rows][tracks.track[rows] == track].tolist())
        assert len(frames) == 4 and frames[0] == 1 and frames[-1] == 19


def test_bad_options_are_refused():
    with pytest.raises(CaclError, match="--every"):
        CropOptions(every=0)
    with pytest.raises(CaclError, match="--max-per-track"):
        CropOptions(max_per_track=-1)
