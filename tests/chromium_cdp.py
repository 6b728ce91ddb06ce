"""Headless Chromium over the DevTools protocol (``--remote-debugging-pipe``: JSON messages ended by NUL on fds 3
and 4), stdlib only: open a local page, collect console errors, uncaught exceptions and every request, evaluate
JavaScript, click at a point, take a screenshot. Used by tests/test_report_html.py."""
from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


class CdpError(RuntimeError):
    pass


class Browser:
    """One headless Chromium with one page attached (flattened session)."""

    def __init__(self, executable: str, *, width: int = 1280, height: int = 900, timeout: float = 60.0) -> None:
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="tflq-chromium-")
        # A file, not a pipe: nobody reads Chromium's log while it runs, and a full pipe would block it.
        self._log = open(Path(self.profile) / "stderr.log", "w+b")  # noqa: SIM115 (closed in close())
        to_child_read, to_child_write = os.pipe()
        from_child_read, from_child_write = os.pipe()

        def child_fds() -> None:  # runs in the child: the protocol's fds are 3 (commands in) and 4 (replies out)
            commands = fcntl.fcntl(to_child_read, fcntl.F_DUPFD, 10)
            replies = fcntl.fcntl(from_child_write, fcntl.F_DUPFD, 10)
            os.dup2(commands, 3, inheritable=True)
            os.dup2(replies, 4, inheritable=True)
            os.closerange(5, 1 << 16)  # nothing else of the test process leaks into the browser

        self.process = subprocess.Popen(
            [
                executable, "--headless=new", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--mute-audio", "--hide-scrollbars",
                f"--user-data-dir={self.profile}", f"--window-size={width},{height}", "about:blank",
            ],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._log,
            preexec_fn=child_fds, close_fds=False,
        )
        os.close(to_child_read)
        os.close(from_child_write)
        self._out = os.fdopen(to_child_write, "wb", buffering=0)
        self._in = os.fdopen(from_child_read, "rb", buffering=0)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=True)
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session=True)

    def _read_message(self, deadline: float) -> dict[str, Any]:
        import select

        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CdpError("no answer from Chromium in time")
            ready, _, _ = select.select([self._in], [], [], left)
            if ready:
                chunk = self._in.read(1 << 16)
                if not chunk:
                    raise CdpError("Chromium closed the pipe: " + self._stderr_tail())
                self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def _stderr_tail(self) -> str:
        self.process.kill()
        self.process.wait(timeout=10)
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-2000:]

    def call(self, method: str, params: dict[str, Any] | None = None, *, session: bool = False) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session
        self._out.write(json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise CdpError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def wait_for(self, method: str) -> dict[str, Any]:
        """The first event ``method`` since the last :meth:`open` (waiting for it when none came yet)."""
        deadline = time.monotonic() + self.timeout
        for event in self.events:
            if event["method"] == method:
                return event
        while True:
            event = self._read_message(deadline)
            if "method" in event:
                self.events.append(event)
                if event["method"] == method:
                    return event

    def open(self, path: Path) -> None:
        """Navigate to a local file and wait for its load event (scripts have run)."""
        self.events.clear()
        self.call("Page.navigate", {"url": path.resolve().as_uri()}, session=True)
        self.wait_for("Page.loadEventFired")
        self.evaluate("1")  # drain: events sent before the answer are collected

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=True)
        if "exceptionDetails" in result:
            raise CdpError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def click(self, x: float, y: float) -> None:
        """A real mouse click (pressed, released) at page coordinates."""
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent",
                      {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}, session=True)

    def screenshot(self, path: Path) -> Path:
        """A PNG of the whole page (not only the viewport)."""
        size = self.call("Page.getLayoutMetrics", session=True)["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        data = self.call(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}, session=True
        )
        path.write_bytes(base64.b64decode(data["data"]))
        return path

    def problems(self) -> list[str]:
        """Console errors and warnings, uncaught exceptions, and browser log errors (CSP, failed loads) so far."""
        found = []
        for event in self.events:
            params = event.get("params", {})
            if event["method"] == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                found.append("uncaught: " + str(details.get("exception", {}).get("description") or details.get("text")))
            elif event["method"] == "Runtime.consoleAPICalled" and params.get("type") in ("error", "warning", "assert"):
                found.append(f"console.{params['type']}: " + " ".join(str(a.get("value", a.get("description")))
                                                                      for a in params.get("args", [])))
            elif event["method"] == "Log.entryAdded" and params.get("entry", {}).get("level") in ("error", "warning"):
                entry = params["entry"]
                found.append(f"log {entry.get('source')}: {entry.get('text')} {entry.get('url', '')}".strip())
        return found

    def requests(self, *, blocked: bool = True) -> list[str]:
        """The URLs the page asked for; ``blocked=False``: only those the browser did not block (CSP, ...)."""
        refused = {event["params"]["requestId"] for event in self.events
                   if event["method"] == "Network.loadingFailed" and event["params"].get("blockedReason")}
        return [event["params"]["request"]["url"] for event in self.events
                if event["method"] == "Network.requestWillBeSent"
                and (blocked or event["params"]["requestId"] not in refused)]

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (CdpError, OSError, ValueError):
            pass
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=15)
        for stream in (self._out, self._in, self._log):
            if stream is not None:
                stream.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
