"""Rule explorer_page: the head explorer of one model, one static HTML page from its explorer tables."""

import logging
import time

from svalign import io
from svalign.explorer.page import build_page, check_report_size
from svalign.runtime import rule_logging

with rule_logging(snakemake.log[0]):
    start = time.perf_counter()
    page = build_page(snakemake.input, snakemake.wildcards.model, snakemake.params.options)
    size = check_report_size(page, snakemake.output.html)
    io.write_text(snakemake.output.html, page)
    logging.getLogger("explorer_page").info("%.2f MiB in %.1f s", size / 2**20, time.perf_counter() - start)
