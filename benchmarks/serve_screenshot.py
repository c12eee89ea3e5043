"""The README's picture of ``cacl serve``: a trained run's index of the synthetic test gallery,
served on loopback, one search in headless Chromium (Debian's ``chromium`` + ``chromium-driver``,
driven by Selenium), saved as a PNG.

    python benchmarks/serve_screenshot.py RUN_DIR --out docs/serve_page.png

The gallery is the test split (query + gallery folders) of the synthetic set the run was trained
on (``data.synth_preset``); the query is the first query image of identity ``--identity`` and the
page shows its nearest images in the other cameras. ``--labelling``: the labelling view instead
(README, "How good is it on my cameras?"): the view is ticked and the query's true matches among
the first results are marked "same person", the first other result "not this person".

    python benchmarks/serve_screenshot.py RUN_DIR --labelling --out docs/label_page.png
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def label_some(driver, pids: dict[str, int], identity: int, matches: int = 3) -> None:
    """Tick the labelling view; mark the first ``matches`` true matches and one wrong result."""
    from selenium.webdriver.common.by import By

    if not driver.find_element(By.ID, "labelling").is_displayed():
        driver.find_element(By.CSS_SELECTOR, "#label-panel summary").click()
    if not driver.find_element(By.ID, "labelling").is_selected():
        driver.find_element(By.ID, "labelling").click()
    time.sleep(1)
    cards = driver.find_elements(By.CSS_SELECTOR, "#results .card[data-name]")
    names = [c.get_attribute("data-name") for c in cards]
    same = [n for n in names if pids.get(n) == identity][:matches]
    other = [n for n in names if pids.get(n) != identity][:1]
    for name, op in [*((n, "same") for n in same), *((n, "different") for n in other)]:
        driver.find_element(
            By.CSS_SELECTOR, f'#results .card[data-name="{name}"] .mark-{op}'
        ).click()
        time.sleep(0.7)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a trained run folder (best.pt)")
    parser.add_argument("--out", type=Path, default=Path("docs/serve_page.png"))
    parser.add_argument("--identity", type=int, default=12, help="the query's identity")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--size", default="1280,900", help="window width,height")
    parser.add_argument("--labelling", action="store_true", help="the labelling view, marked")
    args = parser.parse_args()

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from cacl.checkpoints.io import load_checkpoint
    from cacl.config import config_from_dict
    from cacl.data.default import resolve_dataset

    cfg = config_from_dict(load_checkpoint(args.run)["config"])
    dataset = resolve_dataset(**cfg.data.dataset_options())
    root = Path(dataset.gallery[0].path).parent.parent
    work = Path(tempfile.mkdtemp(prefix="cacl-shot-"))
    index = work / "index"
    gallery = work / "gallery"
    gallery.mkdir()
    for sample in [*dataset.query, *dataset.gallery]:  # one folder: query and gallery images
        link = gallery / Path(sample.path).name
        if not link.exists():
            link.symlink_to(Path(sample.path).resolve())
    cacl = [sys.executable, "-m", "cacl"]
    subprocess.run([*cacl, "index", "build", str(args.run), str(gallery), str(index)], check=True)
    server = subprocess.Popen([*cacl, "serve", str(index), "--port", str(args.port)])
    try:
        url = f"http://127.0.0.1:{args.port}"
        for _ in range(600):
            try:
                urllib.request.urlopen(f"{url}/api/stats", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        query = next(s for s in dataset.query if s.pid == args.identity)
        page = f"{url}/?" + urllib.parse.urlencode(
            {"name": Path(query.path).name, "top": 24, "other_cameras": 1}
        )
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for flag in [*FLAGS, f"--window-size={args.size}", f"--user-data-dir={work / 'profile'}"]:
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        try:
            driver.get(page)
            time.sleep(4)  # the results and their thumbnails
            if args.labelling:
                pids = {Path(x.path).name: x.pid for x in [*dataset.query, *dataset.gallery]}
                label_some(driver, pids, args.identity)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(args.out))
        finally:
            driver.quit()
        print(f"{args.out}: {page} (root {root}; run {args.run})")
    finally:
        server.terminate()
        server.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
