"""The dashboard in a real browser: headless Chromium (Debian's chromium + chromium-driver,
installed by packaging/setup-host.sh) loads a 3-node cluster's dashboard with a read token,
finds every node, opens a running job and sees its live log line; a screenshot is saved."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from procs import Cluster, wait_until

pytestmark = pytest.mark.slow

selenium = pytest.importorskip("selenium")
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

LOG_LINE = "hello from the dashboard test"
# Prints one line, then sleeps 60 s in poll_oneoff (a relative monotonic-clock subscription).
PRINT_THEN_SLEEP = """(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 200) "hello from the dashboard test\\n")
  (func (export "_start")
    (i32.store (i32.const 100) (i32.const 200))
    (i32.store (i32.const 104) (i32.const 30))
    (drop (call $fd_write (i32.const 1) (i32.const 100) (i32.const 1) (i32.const 108)))
    (i64.store (i32.const 0) (i64.const 0))
    (i32.store8 (i32.const 8) (i32.const 0))
    (i32.store (i32.const 16) (i32.const 1))
    (i64.store (i32.const 24) (i64.const 60000000000))
    (i64.store (i32.const 32) (i64.const 0))
    (i32.store16 (i32.const 40) (i32.const 0))
    (drop (call $poll (i32.const 0) (i32.const 300) (i32.const 1) (i32.const 400)))))
"""
SCREENSHOT_DIR = Path(__file__).resolve().parents[2] / "out"


@pytest.fixture
def browser(tmp_path):
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, "make test installs chromium and chromium-driver (packaging/setup-host.sh)"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--ignore-certificate-errors",  # the node's certificate is pinned by fingerprint, not by a CA
        f"--user-data-dir={tmp_path / 'chromium'}",
        "--window-size=1400,1000",
    ):
        options.add_argument(flag)
    drv = webdriver.Chrome(service=Service(driver), options=options)
    try:
        yield drv
    finally:
        drv.quit()


def test_the_dashboard_shows_every_node_and_a_running_jobs_live_log(tmp_path, browser):
    with Cluster(tmp_path / "nodes") as cluster:
        a = cluster.add("a", settings={"executors": '["wasm"]'})
        b = cluster.add("b", seed=a, settings={"executors": '["wasm"]'})
        c = cluster.add("c", seed=a, settings={"executors": '["wasm"]'})
        wait_until(lambda: all(len(n.nodes()) == 3 for n in (a, b, c)), 30, "three nodes")
        context = tmp_path / "ctx"
        context.mkdir()
        (context / "job.wat").write_text(PRINT_THEN_SLEEP)
        job = (
            a.form("submit", str(context), "--kind", "wasm", "--module", "job.wat")
            .stdout.strip()
            .splitlines()[-1]
        )
        wait_until(lambda: a.call("job.status", {"job": job})["state"] == "running", 30, "the job to run")

        url = json.loads(b.form("token", "create", "--ttl", "10m", "--json").stdout)["url"]
        browser.get(url)
        wait_until(
            lambda: len(browser.find_elements(By.CSS_SELECTOR, "#nodes tbody tr")) == 3, 30, "three node rows"
        )
        shown = browser.find_element(By.ID, "nodes").text
        for node in (a, b, c):
            assert node.node_id[:12] in shown
        assert browser.find_element(By.ID, "error").text == ""
        link = wait_until(
            lambda: [e for e in browser.find_elements(By.CSS_SELECTOR, "a.job-link") if e.text == job[:16]],
            30,
            "the job in the list",
        )[0]
        link.click()
        wait_until(lambda: LOG_LINE in browser.find_element(By.ID, "log").text, 30, "the live log line")
        assert "running" in browser.find_element(By.ID, "job-summary").text
        assert browser.find_elements(By.CSS_SELECTOR, "#explain tbody tr")
        SCREENSHOT_DIR.mkdir(exist_ok=True)
        assert browser.save_screenshot(str(SCREENSHOT_DIR / "dashboard.png"))
        a.call("job.cancel", {"job": job})
