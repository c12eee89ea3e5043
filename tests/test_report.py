"""The HTML run report: written by ``cacl train``, self-contained, numbers equal results.json."""

from __future__ import annotations

import base64
import io
import json
import logging
import shutil
from html.parser import HTMLParser

import pytest
from PIL import Image

from cacl.cli import main
from cacl.report import REPORT_FILE, make_report, write_report_quietly

FAST = [
    "data.height=32",
    "data.width=16",
    "train.iters=2",
    "train.batch_size=8",
    "train.deterministic=true",
]


class ReportParser(HTMLParser):
    """Collects images, tags, notes and the ``data-key`` cells of the summary / epochs tables."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict[str, str]] = []
        self.tags: set[str] = set()
        self.summary: dict[str, str] = {}
        self.epochs: dict[int, dict[str, str]] = {}
        self.notes = ""
        self._table: str | None = None
        self._epoch: int | None = None
        self._key: str | None = None
        self._in_notes = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.add(tag)
        if tag == "img":
            self.images.append(a)
        elif tag == "table":
            self._table = a.get("id")
        elif tag == "tr" and "data-epoch" in a:
            self._epoch = int(a["data-epoch"])
            self.epochs[self._epoch] = {}
        elif tag == "td" and "data-key" in a:
            self._key = a["data-key"]
        elif tag == "div" and a.get("id") == "notes":
            self._in_notes = True

    def handle_endtag(self, tag):
        if tag == "td":
            self._key = None
        elif tag == "div":
            self._in_notes = False

    def handle_data(self, data):
        if self._in_notes:
            self.notes += data
        if self._key is None:
            return
        if self._table == "summary":
            self.summary[self._key] = self.summary.get(self._key, "") + data
        elif self._table == "epochs" and self._epoch is not None:
            self.epochs[self._epoch][self._key] = data


def parse(path) -> ReportParser:
    parser = ReportParser()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def decoded_images(parser: ReportParser) -> list[Image.Image]:
    images = []
    for img in parser.images:
        prefix = "data:image/png;base64,"
        assert img["src"].startswith(prefix), img["src"][:40]  # nothing external
        image = Image.open(io.BytesIO(base64.b64decode(img["src"][len(prefix) :])))
        image.load()  # decodes every pixel
        assert image.format == "PNG"
        assert 200 <= image.width <= 3000 and 150 <= image.height <= 4000, image.size
        images.append(image)
    return images


def close(shown: str, value: float) -> bool:
    return abs(float(shown) - value) <= 5e-5  # 4 decimals on the page


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 2-epoch run on the tiny synthetic set through ``cacl train`` (which writes the report)."""
    cache = tmp_path_factory.mktemp("cache")
    out = tmp_path_factory.mktemp("run")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CACL_CACHE", str(cache))
        argv = ["train", "--config", "smoke", "--output", str(out), "--no-progress", *FAST]
        assert main([*argv, "train.epochs=2", "train.eval_every=2"]) == 0
        yield out


def test_train_writes_a_self_contained_report(run):
    page = parse(run / REPORT_FILE)
    assert not {"script", "link", "iframe", "object"} & page.tags
    images = decoded_images(page)
    alts = [img["alt"] for img in page.images]
    assert alts == [
        "mAP",
        "loss terms per epoch",
        "clusters and outliers per epoch",
        "cluster sizes of the last epoch",
        "NMI and ARI per epoch",
        "camera statistics per epoch",
        "CMC curve",
        "ranked results",
    ]
    assert images[-1].height > 2 * images[0].height / 3  # 8 query rows
    assert page.notes == ""  # nothing is missing
    assert not list(run.glob(f".{REPORT_FILE}*"))  # no temporary file left behind


def test_numbers_on_the_page_are_those_of_results_json(run):
    results = json.loads((run / "results.json").read_text())
    page = parse(run / REPORT_FILE)
    s = page.summary
    for key in ("initial_mAP", "mAP", "mINP", "rank1", "rank5", "rank10"):
        assert close(s[key], results[key]), key
    assert close(s["initial_rank1"], results["initial"]["rank1"])
    assert s["best_epoch"] == str(results["best_epoch"])
    assert s["epochs_done"] == "2" and s["device"] == results["device"]
    assert results["dataset"]["root"] in s["dataset"]
    assert f"({results['wall_seconds']:.1f} s)" in s["wall_seconds"]
    assert close(page.epochs[0]["mAP"], results["initial"]["mAP"])
    assert sorted(page.epochs) == [0, 1, 2]
    assert page.epochs[1]["mAP"] == "-"  # epoch 1 was not evaluated
    for h in results["history"]:
        row = page.epochs[h["epoch"]]
        for key in ("clusters", "outliers", "clusters_before_refine", "outliers_before_refine"):
            assert row[key] == str(h["cluster"][key]), key
        for key in ("nmi", "ari"):
            assert close(row[key], h["cluster"][key]), key
        for key, value in h["loss"].items():
            assert close(row[key], value), key
        for key in ("mAP", "rank1", "rank5"):
            if "eval" in h:
                assert close(row[key], h["eval"][key]), key


def test_the_cmc_curve_is_of_the_best_model(run, tmp_path):
    """``cacl train`` hands the best epoch's evaluation to the report; ``cacl report`` evaluates
    best.pt again: both show the best epoch's mAP and rank-1."""
    results = json.loads((run / "results.json").read_text())
    numbers = f"mAP {results['mAP']:.4f}, rank-1 {results['rank1']:.4f}"
    best = f"best.pt (epoch {results['best_epoch']})"
    text = (run / REPORT_FILE).read_text()
    assert f"{best} as evaluated in training: {numbers}" in text
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    text = make_report(copy, progress=False).read_text()
    assert f"{best} evaluated again: {numbers}" in text


def test_missing_parts_are_noted_and_the_rest_still_renders(run, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("*.pt", REPORT_FILE))
    results = json.loads((copy / "results.json").read_text())
    for h in results["history"]:
        h.pop("eval", None)
    results["dataset"]["root"] = str(tmp_path / "gone")
    (copy / "results.json").write_text(json.dumps(results))
    assert main(["report", str(copy)]) == 0
    assert str(copy / REPORT_FILE) in capsys.readouterr().out
    page = parse(copy / REPORT_FILE)
    assert "no best.pt or last.pt" in page.notes
    assert "no evaluated epoch yet" in page.notes
    # the initial mAP, losses, clusters, sizes, NMI / ARI, camera statistics
    assert len(decoded_images(page)) == 6
    assert close(page.summary["mAP"], results["mAP"])

    shutil.copy(run / "best.pt", copy / "best.pt")  # a model, but its dataset is gone
    page = parse(make_report(copy, data="market1501", root=str(tmp_path / "gone"), progress=False))
    assert "dataset not available" in page.notes
    assert "CMC curve" not in [img["alt"] for img in page.images]


def test_report_of_a_run_without_any_epoch(tmp_path):
    (tmp_path / "config.yaml").write_text("train:\n  epochs: 1\n")
    page = parse(make_report(tmp_path, progress=False))
    assert "no results.json yet" in page.notes and "no best.pt" in page.notes
    assert page.images == []


def test_failures_are_clear_errors_or_warnings(tmp_path, caplog, capsys):
    assert main(["report", str(tmp_path)]) == 1
    assert "not a run folder" in capsys.readouterr().err
    with caplog.at_level(logging.WARNING):
        assert write_report_quietly(tmp_path) is None
    assert any("could not write the run report" in r.getMessage() for r in caplog.records)
