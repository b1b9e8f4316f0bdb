"""The head explorer: what each singular direction of a head reads, and whether it is defined.

Submodules (imported one by one; this package imports nothing, so :mod:`svalign.explorer.data` and
:mod:`svalign.explorer.page` stay torch-free):

* :mod:`~svalign.explorer.readouts`: token read-outs of every head's leading singular directions and its SAD examples
  with their terms, in one pass of :func:`svalign.sad.forward.forward_passes` (rule ``explorer_readouts``; torch).
* :mod:`~svalign.explorer.columns`: those read-outs and examples as table columns, token strings decoded once.
* :mod:`~svalign.explorer.data`: the page's data, gathered from the Parquet tables (torch-free).
* :mod:`~svalign.explorer.page`: the one static HTML page, its script and style in ``assets/`` (torch-free).
"""
