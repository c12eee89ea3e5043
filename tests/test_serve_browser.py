"""`cacl serve`'s page in headless Chromium (Debian's chromium + chromium-driver, driven by
Selenium; no browser download): what a person sees when they browse, click, upload and add."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
selenium = pytest.importorskip("selenium")

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.select import Select  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from serve_fixtures import (  # noqa: E402
    GALLERY_SIZE,
    copy_index,
    gallery_name,
    jpeg_bytes,
    make_template,
    start_server,
    stop_server,
)

CHROMIUM = os.environ.get("CACL_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CACL_CHROMEDRIVER", "/usr/bin/chromedriver")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
]
TOKEN = "browser-test-token-0123456789"


def new_driver(profile: Path) -> webdriver.Chrome:
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        pytest.skip(f"no {CHROMIUM} or {CHROMEDRIVER}: apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A writable server over a copy of the tiny index, and a browser."""
    root = tmp_path_factory.mktemp("browser")
    template = make_template(root / "template")
    index = copy_index(template, root / "index")
    driver = new_driver(root / "profile")
    process, url = start_server(index)
    yield driver, url, template.parent / "gallery"
    driver.quit()
    stop_server(process)
    shutil.rmtree(root / "profile", ignore_errors=True)


def wait(driver, condition, timeout: float = 30):
    return WebDriverWait(driver, timeout).until(lambda d: condition(d))


def cards(driver) -> list[dict]:
    """What each result card shows (read in one go: the grid is re-drawn as a whole)."""
    return driver.execute_script(
        "return [...document.querySelectorAll('#results .card')].map(card => {"
        "  const row = {name: card.dataset.name};"
        "  for (const span of card.querySelectorAll('span')) row[span.className] = span.textContent;"
        "  return row; });"
    )


def status(driver) -> str:
    return driver.find_element(By.ID, "status").text


def images_loaded(driver, selector: str) -> bool:
    return driver.execute_script(
        "const imgs = [...document.querySelectorAll(arguments[0])];"
        "return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0);",
        selector,
    )


def params(driver) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(driver.current_url).query).items()}


def test_browse_click_filter_and_share(site):
    driver, url, _ = site
    driver.get(url + "/")
    wait(driver, lambda d: len(cards(d)) == GALLERY_SIZE)
    assert driver.find_element(By.ID, "stats").text.startswith(f"{GALLERY_SIZE} images")
    assert "click one to search" in status(driver)
    wait(driver, lambda d: images_loaded(d, "#results img"))  # thumbnails, from /api/thumbs

    target = gallery_name(4)  # camera 2
    driver.find_element(By.CSS_SELECTOR, f'#results .card[data-name="{target}"]').click()
    wait(driver, lambda d: "nearest" in status(d))
    assert params(driver)["name"] == target
    shown = cards(driver)
    assert len(shown) == GALLERY_SIZE - 1 and target not in [c["name"] for c in shown]
    distances = [float(c["distance"]) for c in shown]
    assert distances == sorted(distances)
    assert driver.find_element(By.ID, "query").is_displayed()
    assert "camera 2" in driver.find_element(By.ID, "query-caption").text
    wait(driver, lambda d: images_loaded(d, "#query-img"))

    driver.find_element(By.ID, "other-cameras").click()
    wait(driver, lambda d: params(d).get("other_cameras") == "1" and "other cameras" in status(d))
    others = cards(driver)
    assert len(others) == 8 and all(c["camera"] in ("camera 1", "camera 3") for c in others)

    Select(driver.find_element(By.ID, "camera")).select_by_value("3")
    wait(driver, lambda d: params(d).get("camera") == "3" and "camera 3)" in status(d))
    only3 = cards(driver)
    assert len(only3) == 4 and {c["camera"] for c in only3} == {"camera 3"}

    driver.back()  # history: the search before the camera filter
    wait(driver, lambda d: "camera" not in params(d) and len(cards(d)) == 8)
    assert Select(driver.find_element(By.ID, "camera")).first_selected_option.text == "all cameras"
    driver.forward()
    wait(driver, lambda d: params(d).get("camera") == "3" and len(cards(d)) == 4)

    shared = driver.current_url  # a person opens the shared address
    driver.get(url + "/")
    wait(driver, lambda d: "click one" in status(d))
    driver.get(shared)
    wait(driver, lambda d: "nearest" in status(d))
    assert cards(driver) == only3 and driver.find_element(By.ID, "other-cameras").is_selected()


def test_more_results_on_demand(site):
    driver, url, _ = site
    driver.get(f"{url}/?name={gallery_name(0)}&top=3")
    wait(driver, lambda d: len(cards(d)) == 3)
    more = driver.find_element(By.ID, "more")
    assert more.is_displayed()
    first = cards(driver)
    more.click()  # 24 more: here all the others, and no more to ask for
    wait(driver, lambda d: len(cards(d)) == GALLERY_SIZE - 1)
    assert params(driver)["top"] == "27" and cards(driver)[:3] == first
    assert not driver.find_element(By.ID, "more").is_displayed()


def test_upload_a_crop_and_add_images(site, tmp_path):
    driver, url, gallery = site
    driver.get(url + "/")
    wait(driver, lambda d: len(cards(d)) >= GALLERY_SIZE)
    crop = gallery / gallery_name(9)
    driver.find_element(By.ID, "query-file").send_keys(str(crop))
    wait(driver, lambda d: "query" in params(d) and "nearest" in status(d))
    best = cards(driver)[0]
    assert best["name"] == gallery_name(9) and float(best["distance"]) < 1e-3
    assert "uploaded crop" in driver.find_element(By.ID, "query-caption").text
    wait(driver, lambda d: images_loaded(d, "#query-img"))  # the stored crop, by its id

    paths = []
    for i in range(2):
        path = tmp_path / f"new{i}_c5s1_000001_00.jpg"
        path.write_bytes(jpeg_bytes(500 + i))
        paths.append(path)
    driver.find_element(By.CSS_SELECTOR, "#add-panel summary").click()
    driver.find_element(By.ID, "add-files").send_keys("\n".join(map(str, paths)))
    driver.find_element(By.ID, "add-button").click()
    wait(driver, lambda d: "images now" in d.find_element(By.ID, "add-status").text)
    assert driver.find_element(By.ID, "add-status").text == (
        f"added 2 new of 2; {GALLERY_SIZE + 2} images now"
    )
    wait(driver, lambda d: "2 added" in d.find_element(By.ID, "stats").text)
    added = [a.text for a in driver.find_elements(By.CSS_SELECTOR, "#added a")]
    assert len(added) == 2 and all(
        re.fullmatch(r"added/new\d_c5s1_000001_00-[0-9a-f]{12}\.jpg", a) for a in added
    )

    driver.find_element(By.ID, "home").click()  # the gallery, newest first
    wait(driver, lambda d: "click one" in status(d) and len(cards(d)) == GALLERY_SIZE + 2)
    newest = cards(driver)[:2]
    assert {c["name"] for c in newest} == set(added) and {c["camera"] for c in newest} == {
        "camera 5"
    }
    wait(driver, lambda d: images_loaded(d, "#results img"))
    options = [o.text for o in Select(driver.find_element(By.ID, "camera")).options]
    assert "camera 5 (2)" in options


def test_the_page_asks_for_the_token_once(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser-token")
    template = make_template(root / "template")
    driver = new_driver(root / "profile")  # skips before any server starts
    os.environ["CACL_SERVE_TOKEN"] = TOKEN
    try:
        process, url = start_server(copy_index(template, root / "index"))
    except BaseException:
        driver.quit()
        raise
    finally:
        del os.environ["CACL_SERVE_TOKEN"]
    try:
        driver.get(url + "/")
        field = driver.find_element(By.NAME, "token")
        field.send_keys("not the token")
        field.submit()
        wait(driver, lambda d: "That is not the token" in d.page_source)
        assert not driver.find_elements(By.ID, "results")
        driver.find_element(By.NAME, "token").send_keys(TOKEN)
        driver.find_element(By.NAME, "token").submit()
        wait(driver, lambda d: len(cards(d)) == GALLERY_SIZE)
        # the cookie carries the token for images (thumbnails load after the cards appear)
        wait(driver, lambda d: images_loaded(d, "#results img"))
        driver.get(f"{url}/?name={gallery_name(1)}")  # and on later visits
        wait(driver, lambda d: "nearest" in status(d))
        cookie = driver.get_cookie("cacl_token")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert TOKEN not in driver.page_source
    finally:
        driver.quit()
        stop_server(process)


@pytest.fixture(scope="module")
def labelling(tmp_path_factory):
    """A writable server of its own (its labels start empty), its index folder, and a browser."""
    root = tmp_path_factory.mktemp("browser-labels")
    index = copy_index(make_template(root / "template"), root / "index")
    driver = new_driver(root / "profile")
    process, url = start_server(index)
    yield driver, url, index
    driver.quit()
    stop_server(process)


def search_and_label(driver, url: str, name: str) -> None:
    """Open the search of ``name`` with the labelling view on."""
    driver.get(f"{url}/?name={name}&top=24")
    wait(driver, lambda d: "nearest" in status(d))
    if not driver.find_element(By.ID, "labelling").is_displayed():
        driver.find_element(By.CSS_SELECTOR, "#label-panel summary").click()
    if not driver.find_element(By.ID, "labelling").is_selected():
        driver.find_element(By.ID, "labelling").click()
    wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results .card .mark-same")) > 0)


def press(driver, name: str, op: str) -> None:
    driver.find_element(By.CSS_SELECTOR, f'#results .card[data-name="{name}"] .mark-{op}').click()


def label_status(driver) -> str:
    return driver.find_element(By.ID, "label-status").text


def summary(driver) -> str:
    return driver.find_element(By.ID, "label-summary").text


def test_label_merge_undo_and_export(labelling, tmp_path):
    from cacl.cli import main
    from cacl.data.readers import load_dataset

    driver, url, index = labelling
    search_and_label(driver, url, gallery_name(0))
    field = driver.find_element(By.ID, "labeller")
    field.clear()
    field.send_keys("ana\t")  # a name, kept for the next visit
    press(driver, gallery_name(1), "same")
    wait(driver, lambda d: "same person (identity" in label_status(d))
    wait(driver, lambda d: summary(d) == "1 identities, 2 images, 1 across cameras")
    # the keyboard: a focused result and "d"
    driver.execute_script(
        "document.querySelector(arguments[0]).focus()",
        f'#results .card[data-name="{gallery_name(2)}"]',
    )
    driver.switch_to.active_element.send_keys("d")
    wait(driver, lambda d: label_status(d) == f"{gallery_name(2)}: not this person")

    # a second identity, then a mark that joins it with the first: the page asks, we accept
    search_and_label(driver, url, gallery_name(3))
    assert driver.find_element(By.ID, "labeller").get_attribute("value") == "ana"
    press(driver, gallery_name(4), "same")
    wait(driver, lambda d: summary(d) == "2 identities, 4 images, 2 across cameras")
    press(driver, gallery_name(1), "same")
    # alert_is_present polls through NoAlertPresentException (a bare switch_to.alert raises it
    # at once when the page has not asked yet)
    alert = WebDriverWait(driver, 30).until(expected_conditions.alert_is_present())
    assert "merge" in alert.text.lower()
    alert.accept()
    wait(driver, lambda d: summary(d) == "1 identities, 4 images, 1 across cameras")
    # the suggestions are links to searches of indexed images
    links = driver.find_elements(By.CSS_SELECTOR, "#suggestions a")
    assert all(link.get_attribute("data-name").endswith(".jpg") for link in links)

    driver.find_element(By.ID, "undo").click()  # the merge is undone, the rest stays
    wait(driver, lambda d: label_status(d) == "undone")
    wait(driver, lambda d: summary(d) == "2 identities, 4 images, 2 across cameras")

    out = tmp_path / "split"
    assert main(["labels", "export", str(index), str(out)]) == 0
    split = load_dataset("market-test", out)
    assert len({s.pid for s in split.query}) == 2
    # the 4 images of the two identities, and the one marked "not this person" as a distractor
    assert len(split.query) + len(split.gallery) == 5
    files = json.loads((out / "split.json").read_text())["files"]
    assert [f["source"] for f in files if f["identity"] == 0] == [gallery_name(2)]
    assert sum(s.pid == 0 for s in split.gallery) == 1
