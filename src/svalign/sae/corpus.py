"""The offline corpus: docstrings of the Python standard library, the one text every install carries.

No download, no model hub: the documents are the docstrings (``inspect.getdoc``) of a fixed list of well-documented
standard-library modules and of their public classes, functions and methods, deduplicated, in sorted order. It is
real English prose with code mixed in: technical, second-person, far narrower than web text. Its exact bytes
depend on the Python version, so provenance records the version, document count, character count and SHA-256.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import platform
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = ["CORPUS_MODULES", "Corpus", "build_corpus", "corpus_digest"]

CORPUS_MODULES = (
    "argparse",
    "asyncio",
    "calendar",
    "collections",
    "concurrent.futures",
    "configparser",
    "contextlib",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "doctest",
    "email.message",
    "enum",
    "fractions",
    "functools",
    "gettext",
    "heapq",
    "http.client",
    "http.server",
    "imaplib",
    "inspect",
    "ipaddress",
    "itertools",
    "json",
    "logging",
    "mailbox",
    "optparse",
    "os",
    "pathlib",
    "pickle",
    "pydoc",
    "random",
    "re",
    "sched",
    "shutil",
    "smtplib",
    "socket",
    "statistics",
    "string",
    "subprocess",
    "tarfile",
    "textwrap",
    "threading",
    "typing",
    "unittest",
    "urllib.parse",
    "urllib.request",
    "uuid",
    "zipfile",
)
"""Standard-library modules whose docstrings make the corpus (one missing from an install is skipped and logged)."""

MIN_CHARACTERS = 40
"""Docstrings shorter than this (one-liners such as "Return self.") carry little text and are left out."""


class Corpus(dict):
    """``{"document", "source", "text"}`` column lists plus ``modules`` (those found) and ``missing``."""


def _public_members(module: Any) -> Iterator[tuple[str, Any]]:
    """``(qualified name, object)`` of the module, its public classes and functions defined there, and the public
    methods of those classes, in sorted order."""
    name = module.__name__
    yield name, module
    for member_name, member in sorted(vars(module).items()):
        if member_name.startswith("_") or getattr(member, "__module__", None) != name:
            continue
        if inspect.isclass(member):
            yield f"{name}.{member_name}", member
            for method_name, method in sorted(vars(member).items()):
                if not method_name.startswith("_") and callable(method):
                    yield f"{name}.{member_name}.{method_name}", method
        elif inspect.isfunction(member):
            yield f"{name}.{member_name}", member


def build_corpus(modules: Sequence[str] = CORPUS_MODULES) -> Corpus:
    """Every distinct docstring (≥ :data:`MIN_CHARACTERS`) of ``modules`` and their public members, in order."""
    corpus = Corpus(document=[], source=[], text=[])
    corpus["modules"], corpus["missing"] = [], []
    seen: set[str] = set()
    for module_name in modules:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            corpus["missing"].append(module_name)
            continue
        corpus["modules"].append(module_name)
        with warnings.catch_warnings():  # deprecated aliases (typing.re) warn when their docstring is read
            warnings.simplefilter("ignore", DeprecationWarning)
            documented = [(source, inspect.getdoc(member)) for source, member in _public_members(module)]
        for source, text in documented:
            if not text or len(text) < MIN_CHARACTERS or text in seen:
                continue
            seen.add(text)
            corpus["document"].append(len(corpus["text"]))
            corpus["source"].append(source)
            corpus["text"].append(text)
    if not corpus["text"]:
        raise RuntimeError(f"no docstring found in the corpus modules {list(modules)} (python run with -OO?)")
    return corpus


def corpus_digest(texts: Sequence[str]) -> dict[str, Any]:
    """What provenance records about a corpus: size, SHA-256 of its texts (NUL-separated) and the Python version."""
    digest = hashlib.sha256("\0".join(texts).encode()).hexdigest()
    return {
        "n_documents": len(texts),
        "n_characters": sum(map(len, texts)),
        "sha256": digest,
        "python": platform.python_version(),
    }
