"""OHIF, as served by MONAI Label at /ohif/, in headless Chromium (Debian's): the Orthanc study renders, and the stock
MONAI Label panel runs the uncertainty overlay and draws it as coloured segments. The page is kept as a screenshot
under docs/figures for the user guide."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "docs" / "figures" / "ohif_uncertainty_overlay.png"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


def _viewport(page) -> np.ndarray:
    """The centre of the first viewport (its edges carry OHIF's coloured border and orientation labels)."""
    canvas = page.locator("canvas.cornerstone-canvas").first
    rgb = np.asarray(Image.open(io.BytesIO(canvas.screenshot())).convert("RGB"), dtype=float)
    h, w = rgb.shape[:2]
    return rgb[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4]


def _coloured_fraction(rgb: np.ndarray) -> float:
    """Share of strongly coloured pixels: an MR slice is grey; segments are drawn in colour."""
    return float(((rgb.max(-1) - rgb.min(-1)) > 60).mean())


def _wait_until(page, condition, what: str, seconds: int = 90) -> np.ndarray:
    for _ in range(seconds):
        rgb = _viewport(page)
        if condition(rgb):
            return rgb
        page.wait_for_timeout(1000)
    raise AssertionError(f"OHIF viewport: {what} did not happen within {seconds} s")


def test_ohif_renders_the_study_and_the_uncertainty_overlay(dicomweb_study):
    from playwright.sync_api import sync_playwright

    study = dicomweb_study
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 850})
            # the MONAI Label panel talks to this server, not to its default http://127.0.0.1:8000
            page.context.add_cookies([{"name": "MONAILABEL_SERVER_URL", "value": f"{study.server.url}/",
                                       "url": study.server.url}])
            page.goto(f"{study.server.url}/ohif/monai-label?StudyInstanceUIDs={study.study_uid}")
            page.locator("canvas.cornerstone-canvas").first.wait_for(state="visible", timeout=120_000)
            slice_rgb = _wait_until(page, lambda rgb: rgb.std() > 10, "the MR slice drawn")
            assert _coloured_fraction(slice_rgb) < 0.001  # grey: no segment yet
            assert page.get_by_text("SA cine (synthetic)").count() > 0  # the series from Orthanc is listed

            page.get_by_text("Confirm and Hide").click()  # OHIF's investigational-use banner
            page.locator(".monaiLabelPanel button").first.click()  # connect to the server: its models are listed
            models = page.locator("select", has=page.locator("option[value='uncertainty_overlay']")).first
            models.select_option("uncertainty_overlay")
            page.get_by_title("Run Segmentation", exact=True).click()
            _wait_until(page, lambda rgb: _coloured_fraction(rgb) > 0.01, "the uncertainty levels drawn as segments")
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT))
        finally:
            browser.close()
