"""Headless Chromium driven over its DevTools protocol: what `report.html` looks like to a real
browser (tests/test_report.py) and the README's screenshot of it.

    python tests/chromium.py demo-output/image/report.html --screenshot docs/report.png

Chromium runs with the flags that work on a machine without a network or a screen
(`--headless --no-sandbox --disable-gpu`, background networking off, a new empty profile) and
`--remote-debugging-port=0`: it picks a free port on 127.0.0.1 and writes it into the profile's
`DevToolsActivePort`, and `websocket-client` talks to the page over it. `check_page` loads a
page and reports what a reader would meet: console errors, uncaught exceptions, resources that
failed to load (the `Log` domain's network errors), images that did not decode, and `<audio>`
and `<video>` elements that cannot play (no metadata after the timeout, or a `MediaError`).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

INSTALL = (
    "install Debian's Chromium (`apt-get install chromium`, as .ci/run does) or set "
    "MEDIATOK_CHROMIUM to a Chromium or Chrome executable"
)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--mute-audio",
    "--hide-scrollbars",
    "--remote-debugging-port=0",
]

# What the page holds, read in the page: every image decoded, every media element's state.
PAGE_STATE = """JSON.stringify({
  images: [...document.images].map(i => ({src: i.src.slice(0, 80), complete: i.complete,
                                          width: i.naturalWidth})),
  media: [...document.querySelectorAll('audio, video')].map(m => ({
    tag: m.tagName.toLowerCase(), src: m.currentSrc || m.src, readyState: m.readyState,
    duration: m.duration, error: m.error ? m.error.code : null})),
  svgs: document.querySelectorAll('svg').length,
  title: document.title,
  height: document.documentElement.scrollHeight,
})"""


def find_chromium() -> str:
    """The Chromium executable: `MEDIATOK_CHROMIUM`, else `chromium` (or Chrome) on the PATH.

    Raises:
        FileNotFoundError: none found, saying how to install it.
    """
    given = os.environ.get("MEDIATOK_CHROMIUM")
    if given:
        if not Path(given).is_file():
            raise FileNotFoundError(f"MEDIATOK_CHROMIUM={given} is not a file; {INSTALL}")
        return given
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    raise FileNotFoundError(f"no Chromium found on the PATH for the browser test; {INSTALL}")


@dataclass
class PageReport:
    """What `Browser.check_page` found on a page.

    Attributes:
        errors: console errors, uncaught exceptions and failed loads, one line each.
        images: `{"src", "complete", "width"}` of each `<img>`.
        media: `{"tag", "src", "readyState", "duration", "error"}` of each `<audio>`/`<video>`.
        svgs: how many `<svg>` elements the page holds.
        title: the document's title.
        height: the page's scroll height in CSS pixels.
    """

    errors: list[str] = field(default_factory=list)
    images: list[dict[str, Any]] = field(default_factory=list)
    media: list[dict[str, Any]] = field(default_factory=list)
    svgs: int = 0
    title: str = ""
    height: int = 0

    def problems(self) -> list[str]:
        """Everything a reader would see broken: errors, undecoded images, unplayable media."""
        found = list(self.errors)
        found += [f"image not decoded: {i['src']}" for i in self.images if not i["width"]]
        found += [
            f"{m['tag']} cannot play: {m['src']} (readyState {m['readyState']}, error {m['error']})"
            for m in self.media
            if m["error"] is not None or m["readyState"] < 1
        ]
        return found


class Browser:
    """A headless Chromium with one page, driven over DevTools; a context manager.

    Args:
        width, height: the page's viewport in CSS pixels.
        timeout: seconds to wait for the browser to start and for each command.
    """

    def __init__(self, width: int = 1100, height: int = 900, timeout: float = 30.0):
        self.width, self.height, self.timeout = width, height, timeout
        self._events: list[dict[str, Any]] = []
        self._next_id = 0

    def __enter__(self) -> Browser:
        import websocket  # websocket-client, in the dev extra

        self._profile = tempfile.TemporaryDirectory(prefix="mediatok-chromium-")
        profile = Path(self._profile.name)
        self._log = open(profile / "chromium.log", "wb")  # closed in __exit__
        self._process = subprocess.Popen(
            [
                find_chromium(),
                *FLAGS,
                f"--user-data-dir={profile}",
                f"--window-size={self.width},{self.height}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            port = self._wait_for_port(profile / "DevToolsActivePort")
            page = self._page_target(port)
            self._socket = websocket.create_connection(
                page["webSocketDebuggerUrl"], timeout=self.timeout, suppress_origin=True
            )
            for domain in ("Page", "Runtime", "Log"):
                self.send(f"{domain}.enable")
            self.send(
                "Emulation.setDeviceMetricsOverride",
                width=self.width,
                height=self.height,
                deviceScaleFactor=1,
                mobile=False,
            )
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        if getattr(self, "_socket", None) is not None:
            self._socket.close()
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._log.close()
        self._profile.cleanup()

    def _wait_for_port(self, file: Path) -> int:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"Chromium exited with {self._process.returncode} before it listened: "
                    + (file.parent / "chromium.log").read_text(errors="replace")[-2000:]
                )
            if file.is_file() and file.read_text().strip():
                return int(file.read_text().split()[0])
            time.sleep(0.05)
        raise TimeoutError(f"Chromium wrote no DevTools port within {self.timeout} s")

    def _page_target(self, port: int) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as reply:
                pages = [t for t in json.load(reply) if t.get("type") == "page"]
            if pages:
                return pages[0]
            time.sleep(0.05)
        raise TimeoutError(f"Chromium opened no page within {self.timeout} s")

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Send a DevTools command and return its result; events that arrive meanwhile are kept.

        Raises:
            RuntimeError: the command failed.
        """
        self._next_id += 1
        ident = self._next_id
        self._socket.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = self._receive(time.monotonic() + self.timeout)
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def _receive(self, deadline: float) -> dict[str, Any]:
        """The next message; an event is recorded before it is returned."""
        self._socket.settimeout(max(0.01, deadline - time.monotonic()))
        message = json.loads(self._socket.recv())
        if "method" in message:
            self._events.append(message)
        return message

    def _wait_for_event(self, method: str, deadline: float) -> None:
        seen = len(self._events)
        while not any(e["method"] == method for e in self._events[seen:]):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {method} within {self.timeout} s")
            self._receive(deadline)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page.

        Raises:
            RuntimeError: it threw.
        """
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:60]}...: {result['exceptionDetails']}")
        return result["result"].get("value")

    def check_page(self, url: str, media_timeout: float = 15.0) -> PageReport:
        """Load `url`, wait for its load event and for its media to have metadata (or fail),
        and report what is broken.

        Args:
            url: a `file://` (or loopback) address.
            media_timeout: seconds to wait for every `<audio>`/`<video>` to reach metadata.
        """
        self._events.clear()
        self.send("Page.navigate", url=url)
        self._wait_for_event("Page.loadEventFired", time.monotonic() + self.timeout)
        deadline = time.monotonic() + media_timeout
        while True:
            state = json.loads(self.evaluate(PAGE_STATE))
            pending = [m for m in state["media"] if m["readyState"] < 1 and m["error"] is None]
            if not pending or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.send("Runtime.evaluate", expression="0")  # collects the events that came meanwhile
        report = PageReport(
            images=state["images"],
            media=state["media"],
            svgs=state["svgs"],
            title=state["title"],
            height=state["height"],
        )
        for event in self._events:
            method, params = event["method"], event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                text = " ".join(
                    str(a.get("value", a.get("description", ""))) for a in params["args"]
                )
                report.errors.append(f"console.{params['type']}: {text}")
            elif method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                text = details.get("exception", {}).get("description", details.get("text"))
                report.errors.append(f"uncaught exception: {text}")
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                entry = params["entry"]
                report.errors.append(
                    f"{entry['source']} error: {entry['text']} {entry.get('url', '')}"
                )
        return report

    def screenshot(self, path: Path, height: int | None = None) -> Path:
        """Write a PNG of the page's top `height` CSS pixels (default: the viewport's)."""
        clip = {"x": 0, "y": 0, "width": self.width, "height": height or self.height, "scale": 1}
        result = self.send(
            "Page.captureScreenshot", format="png", clip=clip, captureBeyondViewport=True
        )
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(result["data"]))
        return path


def main() -> int:
    parser = argparse.ArgumentParser(description="Check a page in headless Chromium.")
    parser.add_argument("page", type=Path)
    parser.add_argument("--screenshot", type=Path, default=None, help="write a PNG of the page")
    parser.add_argument("--height", type=int, default=None, help="screenshot height in pixels")
    parser.add_argument("--width", type=int, default=1100)
    args = parser.parse_args()
    with Browser(width=args.width) as browser:
        report = browser.check_page(args.page.resolve().as_uri())
        if args.screenshot is not None:
            print(f"wrote {browser.screenshot(args.screenshot, args.height)}")
    print(json.dumps({"problems": report.problems(), "media": report.media}, indent=1))
    return 1 if report.problems() else 0


if __name__ == "__main__":
    sys.exit(main())
