"""The web page of ``deeplab serve`` in a real headless Chromium (Debian's package, driven by Playwright): a real
photo chosen as a person would, the overlay drawn, the legend's areas equal to the API's, the class under the
pointer and under the keyboard's probe equal to the label PNG's, the opacity slider and the download link, a
phone-sized viewport, nothing fetched from outside the server. A screenshot is written to
``$DEEPLAB_SCREENSHOT_DIR`` (the README's) when that is set."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
sync_api = pytest.importorskip("playwright.sync_api")

from deeplab.serve.launcher import ServerProcess as Server  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]


@pytest.fixture(scope="module")
def server(tflite_file: Path):
    running = Server(tflite_file)
    yield running
    assert running.stop() == 0


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


def _photo(shared_data: Path) -> Path:
    name = (shared_data / "voc2012_val_dev" / "val_dev.txt").read_text().split()[1]
    return shared_data / "voc2012_val_dev" / "JPEGImages" / f"{name}.jpg"


def _open_page(browser, server: Server, viewport: dict[str, int]):
    page = browser.new_page(viewport=viewport)
    outside: list[str] = []
    page.on("request", lambda request: None if request.url.startswith((server.url, "blob:", "data:"))
            else outside.append(request.url))
    page.goto(server.url)
    page.wait_for_function("!document.getElementById('model').textContent.includes('loading')")
    return page, outside


def test_a_photo_uploaded_in_the_page_is_segmented_like_the_api(server: Server, browser, shared_data: Path) -> None:
    photo = _photo(shared_data)
    api = httpx.post(f"{server.url}/v1/segment?format=json", content=photo.read_bytes(), timeout=60).json()
    labels = np.asarray(Image.open(io.BytesIO(httpx.post(f"{server.url}/v1/segment", content=photo.read_bytes(),
                                                         timeout=60).content)))
    classes = httpx.get(f"{server.url}/v1/model").json()["classes"]
    page, outside = _open_page(browser, server, {"width": 1200, "height": 900})
    page.set_input_files("#file", str(photo))
    page.wait_for_selector("#result:not(.hidden)", timeout=60_000)
    legend = page.eval_on_selector_all("#legend li", "items => items.map(i => [i.dataset.class, +i.dataset.pixels])")
    assert dict(legend) == {s["label"]: s["pixels"] for s in api["segments"]}
    assert [n for _, n in legend] == sorted((n for _, n in legend), reverse=True)  # largest first
    assert "MB" not in page.inner_text("#status") and f"{labels.shape[1]}×{labels.shape[0]}" in page.inner_text("#status")

    box = page.locator("#overlay").bounding_box()
    for y, x in ((labels.shape[0] // 2, labels.shape[1] // 2), (5, 5), (labels.shape[0] - 5, labels.shape[1] // 3)):
        page.mouse.move(box["x"] + (x + 0.5) * box["width"] / labels.shape[1],
                        box["y"] + (y + 0.5) * box["height"] / labels.shape[0])
        assert page.inner_text("#hover") == classes[labels[y, x]], (y, x)

    page.focus("#overlay")  # keyboard: the arrows walk a probe over the segmentation
    page.keyboard.press("ArrowRight")
    x, y = map(int, page.get_attribute("#hover", "data-at").split(","))
    assert (x, y) != (labels.shape[1] // 2, labels.shape[0] // 2) and page.inner_text("#hover") == classes[labels[y, x]]
    page.focus("#opacity")
    page.keyboard.press("ArrowLeft")
    assert page.inner_text("#opacity-value") == "59 %"
    assert page.eval_on_selector("#overlay", "c => getComputedStyle(c).opacity") == "0.59"

    download = page.get_attribute("#download", "href")
    assert download.startswith("blob:") and page.get_attribute("#download", "download") == "labels.png"
    with page.expect_download() as info:
        page.click("#download")
    np.testing.assert_array_equal(np.asarray(Image.open(info.value.path())), labels)
    screenshots = os.environ.get("DEEPLAB_SCREENSHOT_DIR")
    if screenshots:
        page.screenshot(path=str(Path(screenshots) / "serve_page.png"), full_page=True)
    assert outside == []  # works offline: no CDN, no external font


def test_the_page_fits_a_phone_and_reports_a_refused_file(server: Server, browser, tmp_path: Path,
                                                          shared_data: Path) -> None:
    page, outside = _open_page(browser, server, {"width": 390, "height": 844})
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"this is not an image")
    page.set_input_files("#file", str(bad))
    page.wait_for_function("document.getElementById('status').textContent.startsWith('error')", timeout=30_000)
    assert "error 400" in page.inner_text("#status") and "not a readable image" in page.inner_text("#status")
    page.set_input_files("#file", str(_photo(shared_data)))
    page.wait_for_selector("#result:not(.hidden)", timeout=60_000)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling
    box = page.locator("#overlay").bounding_box()
    assert box["width"] <= 390 and box["height"] > 0
    assert outside == []
