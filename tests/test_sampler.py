"""Identity sampler: K images per class from distinct cameras, singletons, reproducibility."""

from __future__ import annotations

import numpy as np
import pytest

from cacl.data.sampler import CameraAwareIdentitySampler


def make(labels, camids, **kw):
    args = dict(batch_size=8, num_instances=4, iters=5, seed=3) | kw
    return CameraAwareIdentitySampler(np.array(labels), np.array(camids), **args)


def test_length_and_k_distinct_cameras():
    # class 0: 8 images over 4 cameras; class 1: 6 images over 2 cameras
    labels = [0] * 8 + [1] * 6
    cams = [0, 0, 1, 1, 2, 2, 3, 3] + [0, 0, 0, 1, 1, 1]
    sampler = make(labels, cams, iters=50)
    stream = list(sampler)
    assert len(stream) == len(sampler) == 50 * 8
    lab, cam = np.array(labels), np.array(cams)
    # the stream is a sequence of K-groups of one class each
    groups = np.array(stream).reshape(-1, 4)
    for g in groups:
        assert len(set(lab[g])) == 1
        assert len(set(g)) == 4  # no image twice within a class group
        expected_cams = 4 if lab[g[0]] == 0 else 2
        assert len(set(cam[g])) == expected_cams


def test_singletons_give_one_image_and_outliers_are_never_drawn():
    labels = [0, 0, 0, 0, 1, 2, 3, -1, -1]
    cams = [0, 1, 2, 3, 0, 1, 2, 0, 1]
    stream = list(make(labels, cams, iters=20))
    assert 7 not in stream and 8 not in stream
    counts = np.bincount(stream, minlength=9)
    assert counts[4] > 0 and counts[5] > 0 and counts[6] > 0
    # a full class visit contributes 4 images of class 0 per 1 of a singleton
    assert counts[:4].sum() == pytest.approx(4 * counts[4], abs=8)


def test_reproducible_per_seed_and_epoch():
    labels = np.repeat(np.arange(10), 5)
    cams = np.tile(np.arange(5), 10)
    a, b = make(labels, cams, seed=7), make(labels, cams, seed=7)
    assert list(a) == list(b)
    b.set_epoch(1)
    assert list(a) != list(b)
    a.set_epoch(1)
    assert list(a) == list(b)


def test_no_labelled_sample_is_an_error():
    with pytest.raises(ValueError, match="no sample"):
        make([-1, -1], [0, 1])


def runs_of_classes(stream, labels):
    """The stream cut into maximal runs of one class: (class, indexes)."""
    runs = []
    for index in stream:
        cls = labels[index]
        if runs and runs[-1][0] == cls:
            runs[-1][1].append(index)
        else:
            runs.append((cls, [index]))
    return runs


def test_classes_of_one_two_and_three_images_give_all_they_have_once():
    # class 0: 1 image, class 1: 2 images, class 2: 3 images, class 3: 6 images over 3 cameras
    labels = np.array([0, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3, 3])
    cams = np.array([0, 0, 1, 0, 1, 1, 0, 0, 1, 1, 2, 2])
    sampler = make(labels, cams, iters=30)
    stream = list(sampler)
    assert len(stream) == 30 * 8
    sizes = {0: 1, 1: 2, 2: 3, 3: 4}
    runs = runs_of_classes(stream, labels)
    for cls, indexes in runs[:-1]:  # the last run may be cut by the end of the epoch
        # one visit of a class: all its images (at most K), each once
        assert len(indexes) % sizes[cls] == 0
        for visit in np.array(indexes).reshape(-1, sizes[cls]):
            assert len(set(visit)) == sizes[cls]
            if cls == 3:
                assert len(set(cams[visit])) == 3  # K = 4 from all 3 cameras
            else:
                assert set(visit) == set(np.flatnonzero(labels == cls))
    assert {cls for cls, _ in runs} == {0, 1, 2, 3}
