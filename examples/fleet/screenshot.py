"""Take ``docs/img/dashboard.png``: the fleet example and a dashboard in subprocesses, headless Chromium.

python examples/fleet/screenshot.py [OUT.png]
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service as ChromeService
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A port free right now (the dashboard binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, timeout_s: float = 20.0) -> None:
    """Return once something accepts connections on ``port`` (bounded)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def main(out: Path) -> None:
    """Start the fleet and a dashboard, wait until the page shows them working, save the screenshot."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    fleet = subprocess.Popen(
        [sys.executable, str(ROOT / "examples/fleet/fleet.py")], stdout=subprocess.PIPE, text=True, env=env
    )
    assert fleet.stdout is not None
    url = fleet.stdout.readline().split()[2].rstrip(":")  # "fleet on nats://...: shipkit dashboard ..."
    port = free_port()
    dashboard = subprocess.Popen(
        [sys.executable, "-m", "shipkit.cli", "dashboard", "--nats-url", url, "--port", str(port), "--allow-actions"],
        env=env,
    )
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=ChromeService(executable_path="/usr/bin/chromedriver"), options=options)
    try:
        wait_listening(port)
        driver.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(driver, 60, poll_frequency=0.5)
        wait.until(lambda d: d.find_element(By.ID, "live-text").text.startswith("live"))
        # enough to look at: some finished jobs, one running, a throughput line and a few events
        wait.until(lambda d: int(d.find_element(By.CSS_SELECTOR, "[data-testid=count-complete] b").text or 0) >= 2)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#spark polyline"))
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "[data-testid=event]")) >= 8)
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "[data-testid=count-running] b").text == "2")
        out.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(out))
        print(f"saved {out}")
    finally:
        driver.quit()
        dashboard.terminate()
        fleet.terminate()
        dashboard.wait(10)
        fleet.wait(10)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs/img/dashboard.png")
