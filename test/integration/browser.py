"""A real browser for tests of weir's pages: Debian's Chromium, headless, driven through
chromedriver by Selenium (python3-selenium, chromium-driver). Each Browser has its own new,
empty profile and is started with the switches that keep it from reaching out on a closed
network (no component updates, no sync, no QUIC, no background requests)."""

import os
import shutil
import tempfile
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


class Browser:
    def __init__(self, width=1280, height=1100):
        self.profile = tempfile.mkdtemp(prefix="weir-chromium-")
        o = webdriver.ChromeOptions()
        o.binary_location = CHROMIUM
        for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync",
                  "--user-data-dir=" + self.profile, "--window-size=%d,%d" % (width, height)):
            o.add_argument(a)
        o.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=o)
        self.console = []

    def open(self, url):
        self.driver.get(url)

    def text(self, css):
        """The text shown (innerText) by the first element matching `css`, or None when there is
        none. Read in one script call, so a page that rebuilds its DOM between a lookup and a
        read cannot hand out a stale element."""
        return self.driver.execute_script(
            "var e = document.querySelector(arguments[0]); return e ? e.innerText : null;", css)

    def count(self, css):
        return self.driver.execute_script(
            "return document.querySelectorAll(arguments[0]).length;", css)

    def js(self, script, *args):
        return self.driver.execute_script(script, *args)

    def console_errors(self):
        """Console messages of level SEVERE so far (script errors, CSP violations, failed
        loads), accumulated: Chromium hands each one out once."""
        self.console += [m for m in self.driver.get_log("browser") if m["level"] == "SEVERE"]
        return list(self.console)

    def screenshot(self, path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.driver.save_screenshot(path)

    def close(self):
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)


def wait_shown(browser, css, pred, timeout=30.0, what=None):
    """Waits until the text shown at `css` satisfies pred(text) and returns that text. The page
    refreshes itself; this only looks, it never reloads it."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = browser.text(css)
        if last is not None and pred(last):
            return last
        time.sleep(0.2)
    raise AssertionError("the page never showed %s at %s (last shown: %r)"
                         % (what or "the expected text", css, last))
