"""The offline corpus: docstrings of the Python standard library, and text sampled from SmolLM2-135M.

No download, no model hub. Two sources, both offline:

* :func:`build_corpus`: the docstrings (``inspect.getdoc``) of a fixed list of well-documented standard-library
  modules and of their public classes, functions and methods, deduplicated, in sorted order. Real English prose
  with code mixed in: technical, second-person, far narrower than web text.
* :func:`sample_text`: sequences sampled from the packaged SmolLM2-135M (trained on web text, FineWeb-Edu among
  it), started from its BOS token and drawn from the model's own distribution (temperature 1, no top-k or top-p),
  with a fixed seed. Closer to the natural text the models were trained on and the prompts are written in, at the
  cost of a forward pass per token.

Their exact bytes depend on the Python version (docstrings) and on the torch build (sampling), so provenance
records the versions, document count, character count and SHA-256.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import platform
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = ["CORPUS_MODULES", "SAMPLED", "Corpus", "build_corpus", "corpus_digest", "sample_text"]

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

SAMPLED = "smollm2 sample"
"""``source`` of a sampled-text document in the corpus table (followed by its index)."""

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


def sample_text(model_dir: str, sequences: int, tokens: int, seed: int, batch: int = 32) -> list[str]:
    """``sequences`` texts of up to ``tokens`` tokens each sampled from the causal LM in ``model_dir`` (ancestral
    sampling from BOS: temperature 1, no truncation), seeded; a sequence that ends early (EOS) is shorter."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    torch.manual_seed(seed)
    texts: list[str] = []
    with torch.no_grad():
        for first in range(0, sequences, batch):
            prompt = torch.full((min(batch, sequences - first), 1), start)
            out = model.generate(
                prompt,
                attention_mask=torch.ones_like(prompt),
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                max_new_tokens=tokens,
                pad_token_id=tokenizer.eos_token_id,
            )
            texts += [text.strip() for text in tokenizer.batch_decode(out[:, 1:], skip_special_tokens=True)]
    return [text for text in texts if len(text) >= MIN_CHARACTERS]


def corpus_digest(texts: Sequence[str]) -> dict[str, Any]:
    """What provenance records about a corpus: size, SHA-256 of its texts (NUL-separated) and the Python version."""
    digest = hashlib.sha256("\0".join(texts).encode()).hexdigest()
    return {
        "n_documents": len(texts),
        "n_characters": sum(map(len, texts)),
        "sha256": digest,
        "python": platform.python_version(),
    }
