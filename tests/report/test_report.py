"""`imgfeat report` in a real browser: headless Chromium (Debian's chromium and chromium-driver) driven
by Selenium opens the page the CLI wrote and checks that it loads without a console error, that every
thumbnail decodes, that it shows exactly the near-duplicate groups `imgfeat dedup` finds (which are the
originals with their edited copies, by construction), that each drawn box lies inside its image, and
that a row whose file has gone since extraction and a row that failed are shown, not fatal.

Run by scripts/test.sh after `cargo build --release`. Needs no shared data: the photos are the
committed fixtures and edited copies made here.
"""
import csv
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image, ImageEnhance

ROOT = Path(__file__).resolve().parents[2]
CLI = ROOT / "target/release/imgfeat"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def imgfeat(*args):
    result = subprocess.run([str(CLI), *map(str, args)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"imgfeat {' '.join(map(str, args))} failed:\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A folder of the fixture photos, each with a half-size copy, a JPEG-quality-30 copy and a brighter
    copy; one file that is not an image; the features, the dedup groups and the report of it all. One
    copy is deleted after extraction, as happens when a report is made later than the job."""
    folder = tmp_path_factory.mktemp("photos")
    originals = sorted((ROOT / "tests/fixtures/photos").glob("*.jpg"))
    families = {}
    for original in originals:
        stem = original.stem
        image = Image.open(original).convert("RGB")
        shutil.copy(original, folder / original.name)
        image.resize((image.width // 2, image.height // 2), Image.LANCZOS).save(folder / f"{stem}_half.jpg", quality=90)
        image.save(folder / f"{stem}_q30.jpg", quality=30)
        ImageEnhance.Brightness(image).enhance(1.2).save(folder / f"{stem}_bright.jpg", quality=90)
        families[stem] = {str(folder / f"{stem}{suffix}.jpg") for suffix in ["", "_half", "_q30", "_bright"]}
    (folder / "notes.jpg").write_bytes(b"this is not a photo\n")
    out = tmp_path_factory.mktemp("out")
    imgfeat("extract", folder, "-o", out / "features.parquet")
    imgfeat("dedup", out / "features.parquet", "-o", out / "groups.csv")
    gone = folder / f"{originals[0].stem}_q30.jpg"
    gone.unlink()
    result = imgfeat("report", out / "features.parquet", "-o", out / "report.html")
    with open(out / "groups.csv", newline="") as f:
        groups = {}
        for row in csv.DictReader(f):
            groups.setdefault(row["group"], set()).add(row["path"])
    return dict(html=out / "report.html", groups=list(groups.values()), families=families, gone=str(gone),
                corrupt=str(folder / "notes.jpg"), stderr=result.stderr, out=out)


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        message = f"SKIPPED: {CHROMIUM} and {CHROMEDRIVER} are needed (apt-get install chromium chromium-driver; scripts/setup.sh does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1600"]:
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page(report, browser):
    browser.get(report["html"].as_uri())
    assert browser.execute_script("return document.readyState") == "complete"
    browser.save_screenshot(str(report["out"] / "report.png"))
    return browser


def test_the_dedup_groups_are_the_originals_with_their_copies(report):
    """The ground truth the page is checked against: every family (a photo and its three edits) is one
    group, and no group mixes families."""
    expected = [family for family in report["families"].values()]
    assert sorted(map(sorted, report["groups"])) == sorted(map(sorted, expected))


def test_the_page_loads_without_errors_and_every_thumbnail_decodes(page):
    errors = [entry for entry in page.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == [], errors
    images = page.execute_script("return [...document.images].map(i => [i.complete, i.naturalWidth, i.alt])")
    assert len(images) > 0
    broken = [alt for complete, width, alt in images if not (complete and width > 0)]
    assert broken == [], f"images that did not decode: {broken}"


def test_the_page_shows_the_groups_dedup_finds(page, report):
    from selenium.webdriver.common.by import By

    shown = page.find_elements(By.CSS_SELECTOR, "#groups .group")
    assert len(shown) == len(report["groups"])
    members = [{span.get_attribute("title") for span in group.find_elements(By.CSS_SELECTOR, "figcaption span[title]")} for group in shown]
    assert sorted(map(sorted, members)) == sorted(map(sorted, report["groups"]))
    for group in shown:
        assert len(group.find_elements(By.CSS_SELECTOR, ".representative")) == 1


def test_each_box_lies_inside_its_image_and_has_a_label(page):
    from selenium.webdriver.common.by import By

    boxes = page.find_elements(By.CSS_SELECTOR, ".frame .box")
    assert len(boxes) > 0, "no detected object drawn"
    for box in boxes:
        frame = box.find_element(By.XPATH, "..")
        b, f = box.rect, frame.rect
        assert b["width"] > 0 and b["height"] > 0
        assert f["x"] - 1 <= b["x"] and b["x"] + b["width"] <= f["x"] + f["width"] + 1
        assert f["y"] - 1 <= b["y"] and b["y"] + b["height"] <= f["y"] + f["height"] + 1
        assert box.find_element(By.TAG_NAME, "span").text.strip() != ""


def test_the_gallery_shows_every_image_and_the_crops_that_were_embedded(page, report):
    from selenium.webdriver.common.by import By

    families = report["families"]
    cards = page.find_elements(By.CSS_SELECTOR, "#images figure.image")
    assert len(cards) == sum(len(f) for f in families.values())
    assert len(page.find_elements(By.CSS_SELECTOR, "#images .crop img")) > 0, "no crop shown"


def test_a_deleted_file_and_a_failed_row_are_shown_not_fatal(page, report):
    from selenium.webdriver.common.by import By

    missing = page.find_elements(By.CSS_SELECTOR, "#images .missing")
    assert [m.text for m in missing] and all("cannot read the file" in m.text for m in missing)
    assert len(missing) == 1
    assert "1 images no longer readable" in report["stderr"]
    failed = page.find_element(By.ID, "errors").text
    assert report["corrupt"] in failed and "Failed rows (1)" in failed
