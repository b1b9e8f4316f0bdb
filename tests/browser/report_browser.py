"""Render a Snakemake HTML report in headless Chromium and walk it like a reader would.

Chromium is driven through the DevTools protocol over ``--remote-debugging-pipe`` (JSON messages ending in a
NUL byte on file descriptors 3 and 4), so no websocket library and no TCP port are needed. The walk:

1. opens the report (``file://``) and waits for React to draw the side bar;
2. screenshots the start page;
3. clicks every category of the "Results" menu (and every subcategory), and in each results table every row:
   the eye button (the figure must show as a decoded ``<img>`` in the content pane) and the info button (whose
   view names the result's path in the last breadcrumb, and shows its caption);
4. screenshots the first figure's view.

Every uncaught exception (``Runtime.exceptionThrown``), ``console.error``/``console.assert`` call and
browser log entry of level ``error`` (``Log.entryAdded``) during all of that is collected.

Command line (prints a JSON summary; screenshots go to OUTDIR)::

    .venv/bin/python tests/browser/report_browser.py results/report.html OUTDIR

Chromium comes from ``render_report.sh`` next to this file (apt-get installs it when missing).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RENDER_SCRIPT = HERE / "render_report.sh"
NOT_AVAILABLE = 3  # render_report.sh's exit status for "no Chromium and none could be installed"
VIEWPORT = (1400, 900)


class ChromiumUnavailableError(RuntimeError):
    """Chromium is not installed and could not be installed (the message says why)."""


class ReportWalkError(AssertionError):
    """The report did not render or could not be walked (the message lists the page's errors)."""


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


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    head = path.read_bytes()[:24]
    if head[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path} is not a PNG")
    return struct.unpack(">II", head[16:24])


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
        deadline = time.monotonic() + timeout
        with self._lock:
            while message_id not in self._responses:
                remaining = deadline - time.monotonic()
                if self._closed:
                    raise RuntimeError(f"chromium exited during {method}:\n{self.stderr()}")
                if remaining <= 0:
                    raise TimeoutError(f"no answer to {method} within {timeout} s")
                self._lock.wait(remaining)
            response = self._responses.pop(message_id)
        if "error" in response:
            raise RuntimeError(f"{method} failed: {response['error']}")
        return response.get("result", {})

    def wait_event(self, method: str, *, session: str | None = None, timeout: float = 30) -> dict:
        """The first event ``method`` (of ``session``) received so far or within ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                for event in self.events:
                    if event.get("method") == method and (session is None or event.get("sessionId") == session):
                        return event
                remaining = deadline - time.monotonic()
                if self._closed:
                    raise RuntimeError(f"chromium exited while waiting for {method}:\n{self.stderr()}")
                if remaining <= 0:
                    raise TimeoutError(f"no {method} within {timeout} s")
                self._lock.wait(remaining)

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


# The walk through the report's UI, in the page. Snakemake 9's report (React, production build) draws
# #app > div > [div.fixed (show-menu button), nav (side bar), div (content pane)]; the side bar holds the
# breadcrumbs (a nav > ol) and, in div.p-3, the current menu, category list or results table.
WALK_JS = r"""
(() => {
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
  const text = (el) => (el ? el.textContent.trim() : "");
  const sidebar = () => document.querySelector("#app nav");
  const panel = () => sidebar() && sidebar().querySelector(":scope > div > div.p-3");
  const content = () => sidebar() && sidebar().nextElementSibling;
  const crumbList = () => sidebar().querySelector("nav ol");
  // named breadcrumbs: the home crumb and the chevrons are icons, the search box is an input
  const crumbs = () => [...crumbList().children].map(text).filter(Boolean);
  const sameList = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
  const menuLinks = () => [...panel().querySelectorAll(":scope > ul > li")].filter((li) => li.querySelector("a"));

  function categoryNames() {
    const items = [...panel().querySelectorAll(":scope > ul > li")];
    const heading = items.findIndex((li) => !li.querySelector("a") && text(li).toLowerCase() === "results");
    if (heading >= 0) return items.slice(heading + 1).filter((li) => li.querySelector("a")).map(text);
    return items.filter((li) => li.querySelector("a") && text(li) === "Results").map(text);  // one category
  }

  function click(el, what) {
    if (!el) throw new Error("nothing to click: " + what);
    el.click();
  }

  async function home() {
    click(crumbList().querySelector("li a"), "home breadcrumb");
    await until(() => crumbs().length === 0 && panel().querySelector(":scope > ul > li a"), "the menu");
  }

  async function openCategory(category) {
    await home();
    click(menuLinks().find((li) => text(li) === category)?.querySelector("a"), "category " + category);
    await until(() => crumbs().length >= 2 && (panel().querySelector("table") || menuLinks().length), category);
  }

  async function openSubcategory(category, subcategory, toggle) {
    await openCategory(category);
    if (subcategory !== null) {
      click(menuLinks().find((li) => text(li) === subcategory)?.querySelector("a"), "subcategory " + subcategory);
      await until(() => panel().querySelector("table") && crumbs().includes(subcategory), subcategory);
    }
    await until(() => panel().querySelector("table tbody"), "the results table");
    if (toggle !== null) {
      const input = panel().querySelectorAll("fieldset input[type=radio]")[toggle];
      click(input, "toggle " + toggle);
      await until(() => input.checked, "toggle " + toggle);
      await sleep(50);
    }
  }

  const rows = () => [...panel().querySelectorAll("table tbody tr")];

  async function inspectRow(category, subcategory, toggle, index) {
    await openSubcategory(category, subcategory, toggle);
    let row = rows()[index];
    const labels = [...row.children].slice(0, -1).map(text);
    const [eye, info] = row.lastElementChild.querySelectorAll("a");
    const entry = { category, subcategory, toggle, labels, view: null, path: null, caption_chars: 0 };
    if (eye.hasAttribute("download")) {
      const href = eye.getAttribute("href") || "";
      entry.view = { kind: "download", name: eye.getAttribute("download"), src_prefix: href.slice(0, 22) };
    } else {
      click(eye, "eye button");
      const shown = await until(() => content().querySelector("img, iframe"), "the result view");
      if (shown.tagName === "IMG") {
        await until(() => shown.complete, "the image to load");
        try { await shown.decode(); } catch (err) { /* naturalWidth 0 below says it */ }
        entry.view = { kind: "img", width: shown.naturalWidth, height: shown.naturalHeight,
                       src_prefix: shown.src.slice(0, 22), src_chars: shown.src.length };
      } else {
        entry.view = { kind: "iframe", src_prefix: shown.src.slice(0, 22), src_chars: shown.src.length };
      }
    }
    row = rows()[index];
    click(row.lastElementChild.querySelectorAll("a")[1], "info button");
    const before = crumbs();
    await until(() => !sameList(crumbs(), before) && panel().querySelector(":scope > ul"), "the result info");
    entry.path = crumbs().at(-1);
    const items = [...panel().querySelectorAll(":scope > ul > li")];
    const description = items.findIndex((li) => text(li).toLowerCase() === "description");
    entry.caption_chars = description >= 0 ? text(items[description + 1]).length : 0;
    return entry;
  }

  async function walk() {
    await until(() => panel() && panel().querySelector(":scope > ul > li a"), "the report's menu");
    const categories = categoryNames();
    const entries = [];
    const views = [];
    for (const category of categories) {
      await openCategory(category);
      const subcategories = panel().querySelector("table") ? [null] : menuLinks().map(text);
      for (const subcategory of subcategories) {
        await openSubcategory(category, subcategory, null);
        const toggles = panel().querySelectorAll("fieldset input[type=radio]").length;
        for (const toggle of toggles ? [...Array(toggles).keys()] : [null]) {
          await openSubcategory(category, subcategory, toggle);
          const count = rows().length;
          views.push({ category, subcategory, toggle, rows: count });
          for (let index = 0; index < count; index++) {
            entries.push(await inspectRow(category, subcategory, toggle, index));
          }
        }
      }
    }
    await home();
    return { categories, views, entries,
             embedded: { results: Object.keys(results), categories: categories_js() } };
  }
  const categories_js = () => Object.fromEntries(
    Object.entries(categories).map(([name, subs]) => [name, Object.fromEntries(Object.entries(subs))]));

  async function showFigure(category, subcategory, toggle, index) {
    await openSubcategory(category, subcategory, toggle);
    click(rows()[index].lastElementChild.querySelector("a"), "eye button");
    const shown = await until(() => content().querySelector("img"), "the figure");
    await until(() => shown.complete, "the image to load");
    await shown.decode();
    await sleep(100);
    return true;
  }

  async function ready() {  // the start page as drawn: the menu, and the rule graph (vega) when it is shown
    await until(() => panel() && panel().querySelector(":scope > ul > li a"), "the report's menu");
    if (document.querySelector("#rulegraph")) {
      await until(() => document.querySelector("#rulegraph canvas, #rulegraph svg"), "the rule graph");
    }
    await sleep(200);
    return true;
  }

  window.__reportWalk = { ready, walk, showFigure, home };
  return true;
})()
"""


@dataclass
class ReportRender:
    """What the walk through one report found."""

    report: str
    categories: list[str]  # the "Results" menu entries, as shown
    views: list[dict]  # every results table opened: category, subcategory, toggle, rows
    entries: list[dict]  # every row of every results table: labels, path (from the DOM), view (img size ...)
    embedded_results: list[str]  # the keys of the report's embedded `results` object
    embedded_categories: dict[str, dict[str, list[str]]]
    errors: list[str]  # uncaught exceptions, console errors, error log entries
    warnings: list[str]
    screenshots: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def shown_paths(self) -> list[str]:
        return [entry["path"] for entry in self.entries]


def render_report(report: Path, outdir: Path, chromium: str | None = None) -> ReportRender:
    """Open ``report`` in headless Chromium, walk every result, screenshot into ``outdir``."""
    start = time.monotonic()
    chromium = chromium or ensure_chromium()[0]
    outdir.mkdir(parents=True, exist_ok=True)
    with DevToolsPipe(chromium) as browser:
        page = Page(browser)
        try:
            page.navigate(Path(report).resolve().as_uri())
            page.evaluate(WALK_JS)
            page.evaluate("window.__reportWalk.ready()")
            screenshots = {"start": str(page.screenshot(outdir / "report_start.png"))}
            found = page.evaluate("window.__reportWalk.walk()", timeout=120)
            if found["entries"]:
                first = found["entries"][0]
                args = json.dumps([first["category"], first["subcategory"], first["toggle"], 0])
                page.evaluate(f"window.__reportWalk.showFigure(...{args})")
                screenshots["figure"] = str(page.screenshot(outdir / "report_figure.png"))
        except (RuntimeError, TimeoutError) as exc:
            errors, _ = page.problems()
            page.screenshot(outdir / "report_failed.png")
            raise ReportWalkError(
                f"walking {report} failed: {exc}\nerrors in the page:\n"
                + ("\n".join(errors) or "(none)")
                + f"\nscreenshot: {outdir / 'report_failed.png'}"
            ) from exc
        errors, warnings = page.problems()
    return ReportRender(
        report=str(report),
        categories=found["categories"],
        views=found["views"],
        entries=found["entries"],
        embedded_results=found["embedded"]["results"],
        embedded_categories=found["embedded"]["categories"],
        errors=errors,
        warnings=warnings,
        screenshots=screenshots,
        seconds=time.monotonic() - start,
    )


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {Path(sys.argv[0]).name} REPORT.html OUTDIR", file=sys.stderr)
        return 2
    try:
        rendered = render_report(Path(argv[0]), Path(argv[1]))
    except ChromiumUnavailableError as exc:
        print(f"chromium unavailable: {exc}", file=sys.stderr)
        return NOT_AVAILABLE
    print(json.dumps(asdict(rendered), indent=2))
    return 1 if rendered.errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
