"""The results page in a real headless Chromium (Debian's `chromium` and `chromium-driver`,
installed by `.ci/run`), over the service app served by uvicorn on loopback: log in with a
key, ask, see thumbnails, play a segment, see its neighbours."""

from __future__ import annotations

import shutil
import socket
import threading
import time

import pytest
import uvicorn

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver (.ci/run)"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(media_db):
    """The media database's app on a real HTTP server on 127.0.0.1."""
    port = _free_port()
    app = media_db.service.client.app
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", media_db
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--mute-audio"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_window_size(1200, 900)
    yield driver
    driver.quit()


def test_log_in_ask_see_thumbnails_and_play_a_segment(served, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    url, media_db = served
    wait = WebDriverWait(browser, 30)
    browser.get(url + "/")
    key = media_db.service.read["Authorization"].removeprefix("Bearer ")
    browser.find_element(By.ID, "key").send_keys(key)
    browser.find_element(By.ID, "use-key").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "key set"))
    browser.find_element(By.ID, "question").send_keys("what moves?")
    browser.find_element(By.ID, "ask").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#results figure.clip"))
    status = browser.find_element(By.ID, "status")
    assert "error" not in (status.get_attribute("class") or ""), status.text
    # thumbnails arrive through the API with the key, as decoded images
    wait.until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#results figure.clip img[data-loaded='1']")
    )
    image = browser.find_element(By.CSS_SELECTOR, "#results figure.clip img[data-loaded='1']")
    assert browser.execute_script("return arguments[0].naturalWidth", image) > 0
    caption = browser.find_element(By.CSS_SELECTOR, "#results figure.clip figcaption").text
    assert ":" in caption and "·" in caption  # a time range and a score
    sections = browser.find_elements(By.CSS_SELECTOR, "#results section.video")
    # the media database holds one video whose source was removed: its segment is a 410
    playable = [s for s in sections if s.get_attribute("data-video") != media_db.gone]
    assert playable, [s.get_attribute("data-video") for s in sections]
    playable[0].find_element(By.CSS_SELECTOR, "figure.clip").click()
    player = wait.until(ec.presence_of_element_located((By.ID, "segment")))
    # the segment's MP4 loads and has a duration: it plays in the browser
    wait.until(lambda d: d.execute_script("return arguments[0].readyState", player) >= 1)
    assert browser.execute_script("return arguments[0].duration", player) > 0
    assert browser.find_elements(By.CSS_SELECTOR, "#neighbours figure")
    assert browser.save_screenshot(str(tmp_path / "results-page.png"))  # docs/ has one
