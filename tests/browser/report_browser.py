"""Render a Snakemake HTML report in headless Chromium and walk it like a reader would.

Chromium and the page come from browser_common.py next to this file. The walk:

1. opens the report (``file://``) and waits for React to draw the side bar;
2. screenshots the start page;
3. clicks every category of the "Results" menu (and every subcategory), and in each results table every row:
   the eye button (the figure must show as a decoded ``<img>`` in the content pane) and the info button (whose
   view names the result's path in the last breadcrumb, and shows its caption);
4. screenshots the first figure's view.

Every uncaught exception, ``console.error``/``console.assert`` call and browser log entry of level ``error``
during all of that is collected.

Command line (prints a JSON summary; screenshots go to OUTDIR)::

    .venv/bin/python tests/browser/report_browser.py results/report.html OUTDIR
"""

from __future__ import annotations

import json
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from browser_common import UNTIL_JS, open_page, print_render


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    head = path.read_bytes()[:24]
    if head[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path} is not a PNG")
    return struct.unpack(">II", head[16:24])


# The walk through the report's UI, in the page. Snakemake 9's report (React, production build) draws
# #app > div > [div.fixed (show-menu button), nav (side bar), div (content pane)]; the side bar holds the
# breadcrumbs (a nav > ol) and, in div.p-3, the current menu, category list or results table.
WALK_JS = (
    "(() => {"
    + UNTIL_JS
    + r"""  const text = (el) => (el ? el.textContent.trim() : "");
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
)


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
    with open_page(report, outdir, "report", chromium) as page:
        page.evaluate(WALK_JS)
        page.evaluate("window.__reportWalk.ready()")
        screenshots = {"start": str(page.screenshot(outdir / "report_start.png"))}
        found = page.evaluate("window.__reportWalk.walk()", timeout=120)
        if found["entries"]:
            first = found["entries"][0]
            args = json.dumps([first["category"], first["subcategory"], first["toggle"], 0])
            page.evaluate(f"window.__reportWalk.showFigure(...{args})")
            screenshots["figure"] = str(page.screenshot(outdir / "report_figure.png"))
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
    return print_render(lambda: render_report(Path(argv[0]), Path(argv[1])))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
