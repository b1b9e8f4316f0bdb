"""Headless Chromium for the browser tests: find or install it, drive it, and the JavaScript both walks share.

Chromium comes from ``render_report.sh`` next to this file (Debian's package, installed with apt-get when missing)
and is driven through the DevTools protocol over ``--remote-debugging-pipe`` (JSON messages ending in a NUL byte on
file descriptors 3 and 4), so no websocket library and no TCP port are needed. :func:`open_page` opens one page in
it; the walks through a page are report_browser.py (the Snakemake report) and explorer_browser.py (a head explorer).

Every uncaught exception (``Runtime.exceptionThrown``), ``console.error``/``console.assert`` call and browser log
entry of level ``error`` (``Log.entryAdded``) of the page is collected (:meth:`Page.problems`).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RENDER_SCRIPT = HERE / "render_report.sh"
NOT_AVAILABLE = 3  # render_report.sh's exit status for "no Chromium and none could be installed"
VIEWPORT = (1400, 900)

# The waiting helpers of every walk, for the top of an (async) function evaluated in the page: sleep(ms), and
# until(fn, what) that polls fn every 20 ms and returns its first truthy value (throws after `timeout` ms).
UNTIL_JS = r"""
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  async function until(fn, what, timeout = 10000) {
    const start = performance.now();
    for (;;) {
      const value = fn();
      if (value) return value;
      if (performance.now() - start > timeout) throw new Error("timed out waiting for " + what);
      await sleep(20);
    }
  }
"""


class ChromiumUnavailableError(RuntimeError):
    """Chromium is not installed and could not be installed (the message says why)."""


class WalkError(AssertionError):
    """A page did not render or could not be walked (the message lists the page's errors)."""


def ensure_chromium(timeout: float = 600) -> tuple[str, float]:
    """The Chromium binary (installed with apt-get when missing) and the seconds that took."""
    start = time.monotonic()
    if shutil.which("bash") is None:
        raise ChromiumUnavailableError("no bash to run render_report.sh")
    try:
        proc = subprocess.run(
            ["bash", str(RENDER_SCRIPT), "--which"], capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise ChromiumUnavailableError(f"installing chromium took more than {timeout:.0f} s") from exc
    elapsed = time.monotonic() - start
    if proc.returncode == NOT_AVAILABLE:
        reason = [line for line in proc.stderr.splitlines() if line.startswith("render_report:")]
        raise ChromiumUnavailableError("; ".join(reason) or proc.stderr.strip()[-500:])
    if proc.returncode != 0 or not proc.stdout.strip():
        raise RuntimeError(f"render_report.sh --which failed ({proc.returncode}):\n{proc.stderr}")
    return proc.stdout.strip().splitlines()[-1], elapsed


class DevToolsPipe:
    """A headless Chromium and a blocking DevTools-protocol client over ``--remote-debugging-pipe``."""

    def __init__(self, chromium: str, *, viewport: tuple[int, int] = VIEWPORT) -> None:
        self.profile = tempfile.mkdtemp(prefix="chromium-profile-")
        self.stderr_path = Path(self.profile) / "stderr.log"
        # Pipe ends on fds >= 10 in the child, then bash moves them to 3 and 4 and execs Chromium
        # (subprocess can keep fds open, but not renumber them).
        to_browser_r, self._to_browser = _high_pipe()
        self._from_browser, from_browser_w = _high_pipe()
        width, height = viewport
        args = [
            "bash",
            "-c",
            f'exec "$0" "$@" 3<&{to_browser_r} 4>&{from_browser_w} {to_browser_r}<&- {from_browser_w}>&-',
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--remote-debugging-pipe",
            f"--user-data-dir={self.profile}",
            f"--window-size={width},{height}",
            "about:blank",
        ]
        with open(self.stderr_path, "wb") as stderr:
            self.proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr, pass_fds=(to_browser_r, from_browser_w)
            )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._next_id = 0
        self._lock = threading.Condition()
        self._responses: dict[int, dict] = {}
        self.events: list[dict] = []
        self._closed = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = os.read(self._from_browser, 1 << 20)
            except OSError:
                chunk = b""
            if not chunk:
                with self._lock:
                    self._closed = True
                    self._lock.notify_all()
                return
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            with self._lock:
                for raw in messages:
                    message = json.loads(raw)
                    if "id" in message:
                        self._responses[message["id"]] = message
                    else:
                        self.events.append(message)
                self._lock.notify_all()

    def send(self, method: str, params: dict | None = None, *, session: str | None = None, timeout: float = 30) -> dict:
        """Send one command and wait for its result (raises on a protocol error)."""
        with self._lock:
            self._next_id += 1
            message_id = self._next_id
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        response = self._wait(lambda: self._responses.pop(message_id, None), f"the answer to {method}", timeout)
        if "error" in response:
            raise RuntimeError(f"{method} failed: {response['error']}")
        return response.get("result", {})

    def wait_event(self, method: str, *, session: str | None = None, timeout: float = 30) -> dict:
        """The first event ``method`` (of ``session``) received so far or within ``timeout``."""

        def first() -> dict | None:
            matches = (e for e in self.events if e.get("method") == method and session in (None, e.get("sessionId")))
            return next(matches, None)

        return self._wait(first, method, timeout)

    def _wait(self, found: Callable[[], dict | None], what: str, timeout: float) -> dict:
        """``found()``'s first value, asked again on every message from Chromium (raises when Chromium has exited,
        or after ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while (value := found()) is None:
                remaining = deadline - time.monotonic()
                if self._closed:
                    raise RuntimeError(f"chromium exited while waiting for {what}:\n{self.stderr()}")
                if remaining <= 0:
                    raise TimeoutError(f"no {what} within {timeout} s")
                self._lock.wait(remaining)
            return value

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                with contextlib.suppress(RuntimeError, TimeoutError, OSError):
                    self.send("Browser.close", timeout=5)
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=10)
        finally:
            for fd in (self._to_browser, self._from_browser):
                with contextlib.suppress(OSError):
                    os.close(fd)
            shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> DevToolsPipe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _high_pipe() -> tuple[int, int]:
    """``os.pipe()`` with both ends moved to fds >= 10 (so they never collide with 3 and 4)."""
    ends = []
    for fd in os.pipe():
        ends.append(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10))
        os.close(fd)
    return ends[0], ends[1]


class Page:
    """One tab of a :class:`DevToolsPipe` browser, with Runtime, Log and Page events on."""

    def __init__(self, browser: DevToolsPipe, *, viewport: tuple[int, int] = VIEWPORT) -> None:
        self.browser = browser
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            self.send(f"{domain}.enable")
        width, height = viewport
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )

    def send(self, method: str, params: dict | None = None, timeout: float = 30) -> dict:
        return self.browser.send(method, params, session=self.session, timeout=timeout)

    def navigate(self, url: str, timeout: float = 60) -> None:
        result = self.send("Page.navigate", {"url": url}, timeout=timeout)
        if result.get("errorText"):
            raise RuntimeError(f"navigation to {url} failed: {result['errorText']}")
        self.browser.wait_event("Page.loadEventFired", session=self.session, timeout=timeout)

    def evaluate(self, expression: str, timeout: float = 60) -> Any:
        """Evaluate ``expression`` (awaiting a promise) and return its value as JSON; raise on an exception."""
        result = self.send(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True, "timeout": timeout * 1000},
            timeout=timeout + 5,
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            description = details.get("exception", {}).get("description") or details.get("text")
            raise RuntimeError(f"evaluating in the page failed: {description}")
        return result["result"].get("value")

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": False})["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def problems(self) -> tuple[list[str], list[str]]:
        """(errors, warnings) this page reported so far: exceptions, console errors/warnings, log entries."""
        errors: list[str] = []
        warnings: list[str] = []
        for event in list(self.browser.events):
            if event.get("sessionId") != self.session:
                continue
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                text = details.get("exception", {}).get("description") or details.get("text", "")
                errors.append(f"uncaught exception: {text} ({details.get('url', '')}:{details.get('lineNumber')})")
            elif method == "Runtime.consoleAPICalled":
                text = " ".join(_remote_object_text(arg) for arg in params.get("args", []))
                if params.get("type") in ("error", "assert"):
                    errors.append(f"console.{params['type']}: {text}")
                elif params.get("type") == "warning":
                    warnings.append(f"console.warn: {text}")
            elif method == "Log.entryAdded":
                entry = params["entry"]
                text = f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}".strip()
                if entry.get("level") == "error":
                    errors.append(f"log error: {text}")
                elif entry.get("level") == "warning":
                    warnings.append(f"log warning: {text}")
            elif method in ("Inspector.targetCrashed", "Target.targetCrashed"):
                errors.append("the page crashed")
        return errors, warnings


def _remote_object_text(obj: dict) -> str:
    if "value" in obj:
        return str(obj["value"])
    return obj.get("description") or obj.get("type", "?")


@contextlib.contextmanager
def open_page(path: Path, outdir: Path, name: str, chromium: str | None = None) -> Iterator[Page]:
    """``path`` open in a headless Chromium tab (its binary: ``chromium``, else :func:`ensure_chromium`).

    A walk in the ``with`` block that fails (``RuntimeError``, ``TimeoutError``) leaves ``OUTDIR/<name>_failed.png``
    and raises :class:`WalkError` with the page's errors.
    """
    chromium = chromium or ensure_chromium()[0]
    outdir.mkdir(parents=True, exist_ok=True)
    with DevToolsPipe(chromium) as browser:
        page = Page(browser)
        try:
            page.navigate(Path(path).resolve().as_uri())
            yield page
        except (RuntimeError, TimeoutError) as exc:
            errors, _ = page.problems()
            failed = page.screenshot(outdir / f"{name}_failed.png")
            raise WalkError(
                f"walking {path} failed: {exc}\nerrors in the page:\n"
                + ("\n".join(errors) or "(none)")
                + f"\nscreenshot: {failed}"
            ) from exc


def print_render(render: Callable[[], Any]) -> int:
    """The command lines' end: print ``render()``'s dataclass as JSON; exit 1 on page errors, 3 without Chromium."""
    try:
        rendered = render()
    except ChromiumUnavailableError as exc:
        print(f"chromium unavailable: {exc}", file=sys.stderr)
        return NOT_AVAILABLE
    print(json.dumps(asdict(rendered), indent=2, ensure_ascii=False))
    return 1 if rendered.errors else 0
