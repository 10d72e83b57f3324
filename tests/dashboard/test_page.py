"""The page in a real headless Chromium (the system's, driven by Selenium; nothing downloaded).

One browser for the module; every wait is a bounded WebDriverWait on what the page shows.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service as ChromeService
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from tests.dashboard.conftest import Fleet, Steps

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT_S = 10

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason=f"needs {CHROMIUM} and {CHROMEDRIVER} (apt install chromium chromium-driver; .ci/run installs them)",
)


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    """Headless Chromium at the system paths (Selenium Manager never runs: both paths are given)."""
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1000",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=ChromeService(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(browser: webdriver.Chrome) -> WebDriverWait[webdriver.Chrome]:
    return WebDriverWait(browser, WAIT_S, ignored_exceptions=(StaleElementReferenceException,))


def _text(browser: webdriver.Chrome, css: str) -> str:
    found = browser.find_elements(By.CSS_SELECTOR, css)
    return found[0].text if found else ""


def _open(browser: webdriver.Chrome, fleet: Fleet, dashboard: str) -> None:
    browser.get(fleet.urls[dashboard] + "/")
    _wait(browser).until(lambda b: _text(b, "#live-text").startswith("live"))


def test_page_lists_the_service_and_its_rising_request_count(browser: webdriver.Chrome, fleet: Fleet) -> None:
    """The services table shows ``shop``, and its request count goes up as requests are made."""
    _open(browser, fleet, "actions")
    cell = 'tr[data-service="shop"] [data-testid="service-requests"]'
    _wait(browser).until(lambda b: _text(b, cell) != "")
    before = int(_text(browser, cell).replace(",", ""))
    for _ in range(4):
        fleet.run(fleet.client.request("shop.ping", None))
    _wait(browser).until(lambda b: int(_text(b, cell).replace(",", "") or 0) >= before + 4)


def test_progress_bar_advances_and_the_job_completes(browser: webdriver.Chrome, fleet: Fleet) -> None:
    """A job's bar moves with each step it reports and its state turns ``complete``."""
    _open(browser, fleet, "actions")
    job_id = fleet.run(fleet.queue.submit(Steps(steps=2), "stepper"))
    row = f'[data-testid="job-{job_id}"]'
    _wait(browser).until(lambda b: _text(b, f"{row} [data-testid=state]") == "running")
    fleet.call(lambda: fleet.gate.put_nowait(None))
    _wait(browser).until(
        lambda b: (
            b.find_element(By.CSS_SELECTOR, f"{row} [data-testid=progress]").get_attribute("data-progress") == "50"
        )
    )
    fleet.call(lambda: fleet.gate.put_nowait(None))
    _wait(browser).until(lambda b: _text(b, f"{row} [data-testid=state]") == "complete")
    bar = browser.find_element(By.CSS_SELECTOR, f"{row} [data-testid=progress]")
    assert bar.get_attribute("data-progress") == "100"


def test_cancel_button_cancels_a_running_job(browser: webdriver.Chrome, fleet: Fleet) -> None:
    """With actions allowed, Cancel (confirmed) stops a running job, the outcome is reported, and it ends cancelled."""
    _open(browser, fleet, "actions")
    job_id = fleet.run(fleet.queue.submit(Steps(steps=1), "sleeper"))
    row = f'[data-testid="job-{job_id}"]'
    _wait(browser).until(lambda b: _text(b, f"{row} [data-testid=state]") == "running")
    _wait(browser).until(lambda b: b.find_element(By.CSS_SELECTOR, f'[data-testid="cancel-{job_id}"]').click() or True)
    _wait(browser).until(ec.alert_is_present()).accept()
    _wait(browser).until(lambda b: job_id in _text(b, "[data-testid=toast]"))
    _wait(browser).until(lambda b: _text(b, f"{row} [data-testid=state]").startswith("cancelled"))


def test_no_action_buttons_without_allow_actions(browser: webdriver.Chrome, fleet: Fleet) -> None:
    """The read-only dashboard shows a running job without any Cancel button."""
    job_id = fleet.run(fleet.queue.submit(Steps(steps=1), "sleeper"))
    _open(browser, fleet, "readonly")
    row = f'[data-testid="job-{job_id}"]'
    _wait(browser).until(lambda b: _text(b, f"{row} [data-testid=state]") == "running")
    assert browser.find_elements(By.CSS_SELECTOR, f"{row} button") == []
    fleet.run(fleet.queue.cancel(job_id))  # leave the sleeper free for the rest of the module


def test_emitted_event_is_tailed(browser: webdriver.Chrome, fleet: Fleet) -> None:
    """An event emitted on the bus appears in the live tail; the subject filter narrows it."""
    _open(browser, fleet, "actions")
    fleet.run(fleet.bus.emit("order.shipped", {"order": "A-17"}))
    _wait(browser).until(lambda b: "ship.events.order.shipped" in _text(b, "[data-testid=events]"))
    browser.find_element(By.CSS_SELECTOR, "[data-testid=event-filter]").send_keys("order.shipped")
    _wait(browser).until(
        lambda b: all("order.shipped" in e.text for e in b.find_elements(By.CSS_SELECTOR, "[data-testid=event]"))
    )
