"""Open a head explorer page (rule explorer_page) in headless Chromium and pick heads like a reader would.

Chromium and the page come from browser_common.py next to this file. The walk:

1. opens the page (``file://``) and waits for its script to draw the grid and a first head (``window.explorer``);
2. for each head to pick, clicks its grid cell, waits until the page says that head is drawn
   (``document.body.dataset.head``), and counts what is on screen: the spectrum's bars (one per singular value), the
   degenerate-block notes, the read-out boxes with their tokens in context and embedding tokens, the example rows
   with their query and key tokens highlighted; a screenshot per head.

Every uncaught exception, ``console.error`` and error log entry of the page is collected.

Command line (prints a JSON summary; screenshots go to OUTDIR)::

    .venv/bin/python tests/browser/explorer_browser.py results/explorer/minilm/explorer.html OUTDIR [L.H ...]
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from browser_common import UNTIL_JS, open_page, print_render

PICK_JS = (
    "(async (layer, head) => {"
    + UNTIL_JS
    + r"""  const all = (selector) => [...document.querySelectorAll(selector)];
  const cell = document.querySelector(`#grid td.cell[data-layer="${layer}"][data-head="${head}"]`);
  if (!cell) throw new Error(`no grid cell for layer ${layer}, head ${head}`);
  cell.click();
  await until(() => document.body.dataset.head === `${layer}.${head}`, `head ${layer}.${head} to be drawn`);
  await sleep(50);
  return {
    head: document.body.dataset.head,
    title: document.getElementById("title").textContent,
    selected: all("#grid td.sel").map((td) => `${td.dataset.layer}.${td.dataset.head}`),
    bars: all("#spectrum svg rect.bar").length,
    block_notes: all("#spectrum li").map((li) => li.textContent),
    readouts: all("#readouts .readout").length,
    degenerate_readouts: all("#readouts .readout.degenerate").length,
    contexts: all("#readouts .readout li .ctx .focus").map((span) => span.textContent),
    embedding_lines: all("#readouts .readout .emb:not(.sae)").map((div) => div.textContent),
    sae_lines: all("#readouts .readout .sae").map((div) => div.textContent),
    examples: all("#examples tr.example").length,
    example_tokens: all("#examples tr.example .ctx .focus, #examples tr.example .ctx .key").length,
    example_terms: all("#examples tr.example td:last-child div").map((div) => div.textContent),
  };
})
"""
)

START_JS = (
    "(async () => {"
    + UNTIL_JS
    + r"""  const started = () => window.explorer && window.explorer.ready && document.body.dataset.head;
  await until(started, "the explorer to start");
  const cells = [...document.querySelectorAll("#grid td.cell")].map((td) => `${td.dataset.layer}.${td.dataset.head}`);
  return { first: document.body.dataset.head, cells, heads: window.explorer.heads };
})()
"""
)


@dataclass
class ExplorerRender:
    """What picking heads in one explorer page found."""

    page: str
    first_head: str  # the head drawn on opening
    cells: list[str]  # every grid cell, "layer.head"
    picked: list[dict]  # per picked head: what PICK_JS counted
    errors: list[str]
    warnings: list[str]
    screenshots: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def spread_heads(cells: list[str], first: str, n: int = 3) -> list[str]:
    """``n`` heads to pick: the first cell, the middle one and the last (never the head drawn on opening, so every
    pick redraws)."""
    others = [cell for cell in cells if cell != first]
    return [others[round(i * (len(others) - 1) / max(n - 1, 1))] for i in range(n)]


def render_explorer(page_path: Path, outdir: Path, heads: list[str] | None = None, chromium: str | None = None):
    """Open ``page_path``, pick ``heads`` ("layer.head"; default :func:`spread_heads`), screenshot into ``outdir``."""
    start = time.monotonic()
    with open_page(page_path, outdir, "explorer", chromium) as page:
        opened = page.evaluate(START_JS)
        picked, screenshots = [], {}
        for head in heads or spread_heads(opened["cells"], opened["first"]):
            layer, index = (int(part) for part in head.split("."))
            picked.append(page.evaluate(f"({PICK_JS})({layer}, {index})"))
            screenshots[head] = str(page.screenshot(outdir / f"explorer_{layer}_{index}.png"))
        errors, warnings = page.problems()
    return ExplorerRender(
        page=str(page_path),
        first_head=opened["first"],
        cells=opened["cells"],
        picked=picked,
        errors=errors,
        warnings=warnings,
        screenshots=screenshots,
        seconds=time.monotonic() - start,
    )


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(f"usage: {Path(sys.argv[0]).name} PAGE.html OUTDIR [LAYER.HEAD ...]", file=sys.stderr)
        return 2
    return print_render(lambda: render_explorer(Path(argv[0]), Path(argv[1]), argv[2:] or None))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
