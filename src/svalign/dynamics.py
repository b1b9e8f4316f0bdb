"""Training dynamics offline (SPEC §5, paper Fig 7b): a small transformer trained from scratch on repeated segments.

The paper follows one head of Pythia-160M across its training checkpoints. Offline we train our own small model of
the same architecture (GPT-NeoX: rotary positions, q/k/v biases, parallel attention and MLP) on a task where two
known head types form, with a visible phase change in the in-context loss:

* every sequence holds a random segment followed immediately by a copy of itself, at a random place and with a
  random length, among filler tokens. Predicting the copy needs an *induction head* (attend to the token after
  the earlier occurrence of the current token and copy it), which reads what a *previous-token head* of an
  earlier layer wrote. Segment length and position vary, so no purely positional head solves the task;
* each token repeats the one two positions back with probability ``aba_prob`` ("A B A"; everywhere, the copy
  excepted, which repeats its segment). This skip-bigram makes a previous-token head useful on its own, as n-gram
  statistics do in natural text. Without it, small models on this task sit for thousands of steps on an
  "in-context unigram" plateau before any induction head appears (measured: no induction head in 4000 steps for
  GPT-2, Llama and GPT-NeoX shapes); with it the previous-token head forms first and the induction head follows
  within a few hundred steps.

Pieces:

* a word-level tokenizer over ``t0 … t{V−1}`` (plus ``<unk>``, ``<pad>``, ``<bos>``): the text ``"t12 t5 t77"`` is
  one token per word, so prompts for the SAD stage are plain texts;
* batches that are a pure function of ``(seed, purpose, step)`` (:func:`repeat_batch`), which makes resuming exact;
* a small ``GPTNeoXForCausalLM`` (dropout 0, seeded init), which TransformerBridge boots from a local directory and
  whose heads the existing extract → SVD → SAD stages handle (rotary offsets: set ``svd.max_offset >= seq_len − 1``);
* :func:`train_transformer`: AdamW, checkpoints on a log-spaced schedule (:func:`checkpoint_steps`), each a
  self-contained Hugging Face directory written atomically, resumable bit for bit on CPU;
* :func:`induction_score`, :func:`previous_token_score` and :func:`checkpoint_scores`: per-head scores of every
  checkpoint with its loss and in-context loss.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from tqdm.auto import tqdm

# The run's configuration and checkpoint schedule live in a torch-free module (the Snakefile imports them on every
# call, dry runs included); they are re-exported here.
from svalign.dynamics_config import N_SPECIAL, SPECIAL_TOKENS, DynamicsConfig, checkpoint_steps
from svalign.io import Column, provenance, write_table, write_text
from svalign.runtime import TrainingDivergedError, derive_seed
from svalign.tables import DYNAMICS_HEAD_SCORES, DYNAMICS_SAD, DYNAMICS_TRAINING_LOG

__all__ = [
    "DYNAMICS_HEAD_SCORES",
    "DYNAMICS_SAD",
    "DYNAMICS_TRAINING_LOG",
    "SPECIAL_TOKENS",
    "DynamicsConfig",
    "DynamicsRun",
    "RepeatBatch",
    "TrainingDivergedError",
    "build_model",
    "build_tokenizer",
    "can_resume",
    "checkpoint_dirs",
    "checkpoint_info",
    "checkpoint_scores",
    "checkpoint_steps",
    "dynamics_sad_table",
    "head_scores_table",
    "induction_score",
    "previous_token_score",
    "read_manifest",
    "repeat_batch",
    "sad_prompts",
    "sequence_losses",
    "tokens_to_texts",
    "train_transformer",
    "training_log_table",
    "write_head_scores",
    "write_manifest",
    "write_training_log",
]

log = logging.getLogger(__name__)

STATE_FILE = "training_state.pt"
INFO_FILE = "svalign_checkpoint.json"
_CHECKPOINT_DIR = re.compile(r"^step(\d{6,})$")


# --------------------------------------------------------------------------------------------------
# Task, tokenizer and model
# --------------------------------------------------------------------------------------------------


@dataclass
class RepeatBatch:
    """Sequences of filler tokens holding one segment and its immediate copy.

    Positions ``[start, start + L)`` hold a segment and ``[start + L, start + 2L)`` its copy (L = ``period``); the
    other positions are filler (see :func:`repeat_batch`).

    Attributes:
        tokens: ``[batch, seq]`` model token ids (ordinary tokens only, ids ≥ 3).
        start: ``[batch]`` first position of the segment.
        period: ``[batch]`` segment length L.
    """

    tokens: torch.Tensor
    start: torch.Tensor
    period: torch.Tensor

    def to(self, device: torch.device | str) -> RepeatBatch:
        return RepeatBatch(self.tokens.to(device), self.start.to(device), self.period.to(device))

    def in_copy(self) -> torch.Tensor:
        """``[batch, seq]`` True at the positions of the copy: the queries of :func:`induction_score`."""
        return _in_copy(self.tokens.shape[1], self.start, self.period)

    def icl_mask(self) -> torch.Tensor:
        """``[batch, seq − 1]`` True where the next token is predictable from context (the in-context loss).

        The query at position q predicts token q + 1. That token is a copy, and the token at q occurred before
        (so an induction head can find what followed it), exactly when q and q + 1 both lie in the copy.
        """
        copy = self.in_copy()
        return copy[:, :-1] & copy[:, 1:]


def _in_copy(n_pos: int, start: torch.Tensor, period: torch.Tensor) -> torch.Tensor:
    position = torch.arange(n_pos, device=start.device)
    first = (start + period).unsqueeze(1)  # [b, 1]
    return (position >= first) & (position < first + period.unsqueeze(1))


def repeat_batch(config: DynamicsConfig, n: int, seed: int, purpose: str, step: int = 0) -> RepeatBatch:
    """A batch that is a pure function of ``(seed, purpose, step)`` (generated on the CPU, any device later).

    Training draws ``repeat_batch(config, batch_size, config.seed, "train", step)`` for update ``step``, so a
    resumed run sees exactly the batches of an uninterrupted one without saving any RNG state.

    Filler: uniform tokens, each replaced with probability ``aba_prob`` by the token two positions back (chains
    allowed: A B A B …). Then a segment length L ~ U[min_period, max_period] and a start ~ U[0, T − 2L] are drawn
    and positions ``[start + L, start + 2L)`` are overwritten with a copy of ``[start, start + L)``.

    Args:
        n: number of sequences.
        purpose: the stream (``train``, ``eval``, ``sad``); streams never overlap.
    """
    generator = torch.Generator().manual_seed(derive_seed(seed, f"dynamics/{purpose}/{step}"))
    T = config.seq_len
    fresh = torch.randint(config.vocab_size, (n, T), generator=generator) + N_SPECIAL
    echo = torch.rand(n, T, generator=generator) < config.aba_prob  # x_t = x_{t−2}
    echo[:, :2] = False
    # Resolve chains without a loop over positions: within each parity class, x_t is the fresh token of the last
    # position at or before t that did not echo (a running maximum of "fresh" positions).
    position = torch.arange(T).expand(n, T)
    last_fresh = torch.where(echo, torch.full_like(position, -1), position)
    source = torch.empty_like(position)
    for parity in (0, 1):
        source[:, parity::2] = last_fresh[:, parity::2].cummax(dim=1).values
    tokens = fresh.gather(1, source)
    period = torch.randint(config.min_period, config.max_period + 1, (n,), generator=generator)
    # start uniform in [0, T − 2L]: floor(u · (T − 2L + 1)) with u ∈ [0, 1) stays in range for every row.
    start = (torch.rand(n, generator=generator, dtype=torch.float64) * (T - 2 * period + 1)).floor().long()
    copy = _in_copy(T, start, period)
    tokens = tokens.gather(1, torch.where(copy, position - period.unsqueeze(1), position))  # the copy reads [start, …)
    return RepeatBatch(tokens, start, period)


def tokens_to_texts(tokens: torch.Tensor) -> list[str]:
    """``[batch, seq]`` model ids of ordinary tokens → texts ``"t12 t5 …"`` (what the tokenizer maps back)."""
    if (tokens < N_SPECIAL).any():
        raise ValueError("tokens_to_texts: special tokens have no text form here")
    return [" ".join(f"t{int(i) - N_SPECIAL}" for i in row) for row in tokens]


def sad_prompts(config: DynamicsConfig, n: int = 32, seed: int = 0) -> list[str]:
    """Texts for the SAD stage: ``n`` sequences of the training distribution (one repeated segment each).

    They come from their own stream (``purpose="sad"``); ``repeat_batch(config, n, seed, "sad")`` returns the
    same sequences with each one's segment ``start`` and ``period``. Each text is ``seq_len`` words, one token per
    word under the checkpoints' tokenizer (no BOS, as the SAD stage tokenises causal models).
    """
    return tokens_to_texts(repeat_batch(config, n, seed, "sad").tokens)


def build_tokenizer(config: DynamicsConfig) -> Any:
    """Word-level ``PreTrainedTokenizerFast``: ids 0–2 special, ``t{i}`` → i + 3, split on whitespace."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    vocab.update({f"t{i}": i + N_SPECIAL for i in range(config.vocab_size)})
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<bos>",
        model_max_length=config.seq_len,
    )


def _model_config(config: DynamicsConfig) -> Any:
    from transformers import GPTNeoXConfig

    return GPTNeoXConfig(
        vocab_size=config.model_vocab_size,
        hidden_size=config.d_model,
        num_hidden_layers=config.n_layers,
        num_attention_heads=config.n_heads,
        intermediate_size=config.d_mlp,
        max_position_embeddings=config.seq_len,
        rotary_pct=config.rotary_pct,
        rotary_emb_base=10000,
        use_parallel_residual=True,  # Pythia's block: x + attn(ln1(x)) + mlp(ln2(x))
        hidden_act="gelu",
        # Dropout 0: training is a deterministic function of the weights and the batch (exact resume), and the
        # model is small enough not to need it.
        hidden_dropout=0.0,
        attention_dropout=0.0,
        tie_word_embeddings=False,  # as in Pythia
        bos_token_id=SPECIAL_TOKENS.index("<bos>"),
        eos_token_id=SPECIAL_TOKENS.index("<bos>"),
        pad_token_id=SPECIAL_TOKENS.index("<pad>"),
    )


def build_model(config: DynamicsConfig, device: torch.device | str = "cpu") -> Any:
    """A freshly initialised ``GPTNeoXForCausalLM`` (HF's own init), seeded by ``config.seed``.

    The init runs under a forked RNG seeded with ``derive_seed(seed, "dynamics/init")`` on the CPU, so it is the
    same on every device and leaves the caller's RNG untouched.
    """
    from transformers import GPTNeoXForCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(config.seed, "dynamics/init"))
        model = GPTNeoXForCausalLM(_model_config(config))
    return model.to(device)


def sequence_losses(model: Any, batch: RepeatBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean next-token cross-entropy over all positions, and over the in-context positions only.

    Returns:
        ``(loss, icl_loss)``, scalars (nats). The random parts are unpredictable (loss ≥ ln V there), so ``loss``
        cannot go below about ``ln V · (1 − fraction of predictable tokens)``; ``icl_loss`` can go to 0.
    """
    logits = model(input_ids=batch.tokens).logits  # [b, T, V']
    per_token = torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), batch.tokens[:, 1:].flatten(), reduction="none"
    ).view(batch.tokens.shape[0], -1)  # [b, T − 1]
    mask = batch.icl_mask()
    return per_token.mean(), (per_token * mask).sum() / mask.sum().clamp_min(1)


# --------------------------------------------------------------------------------------------------
# Training with resumable, atomic checkpoints
# --------------------------------------------------------------------------------------------------


@dataclass
class DynamicsRun:
    """Result of :func:`train_transformer`.

    Attributes:
        config: the run.
        checkpoints: ``{step: directory}`` of every scheduled checkpoint, ascending.
        log: training-batch losses: ``step`` (1-based update), ``loss``, ``icl_loss``, ``lr`` (arrays).
        resumed_from: the checkpoint step training restarted from (None: from scratch).
        seconds: wall time of this call.
    """

    config: DynamicsConfig
    checkpoints: dict[int, Path]
    log: dict[str, np.ndarray]
    resumed_from: int | None = None
    seconds: float = 0.0


def checkpoint_dirs(out_dir: str | Path) -> dict[int, Path]:
    """Complete checkpoints under ``out_dir`` (``step{N:06d}`` directories with training state), by step.

    A checkpoint directory appears under its final name only once fully written (temp dir + rename), so any
    such directory is complete; temporary ``.step*.tmp`` directories of an interrupted write are ignored.
    """
    out_dir = Path(out_dir)
    found = {}
    if out_dir.is_dir():
        for path in out_dir.iterdir():
            match = _CHECKPOINT_DIR.match(path.name)
            if match and path.is_dir() and (path / STATE_FILE).is_file():
                found[int(match.group(1))] = path
    return dict(sorted(found.items()))


def can_resume(out_dir: str | Path, config: DynamicsConfig) -> bool:
    """Whether ``out_dir`` holds a complete checkpoint of exactly ``config`` to resume from.

    ``train_transformer(..., resume=True)`` continues from the last scheduled checkpoint and refuses checkpoints of
    another config; a rule that reruns because the config changed passes ``resume=can_resume(out_dir, config)`` to
    start over instead. Reads only the JSON summaries (no torch).
    """
    schedule = set(config.schedule())
    existing = [path for step, path in checkpoint_dirs(out_dir).items() if step in schedule]
    return bool(existing) and checkpoint_info(existing[-1])["config"] == config.to_dict()


def _lr_factor(config: DynamicsConfig, step: int) -> float:
    """Multiplier of ``lr`` at update ``step`` (1-based): linear warm-up, then constant."""
    return min(1.0, step / config.warmup_steps) if config.warmup_steps else 1.0


def _save_checkpoint(
    out_dir: Path,
    step: int,
    model: Any,
    optimizer: torch.optim.Optimizer,
    tokenizer: Any,
    config: DynamicsConfig,
    history: dict[str, list],
) -> Path:
    """Write ``out_dir/step{N:06d}`` atomically: HF model + tokenizer, training state, a JSON summary."""
    final = out_dir / f"step{step:06d}"
    tmp = out_dir / f".{final.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)  # left by an interrupted write
    model.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    state = {
        "step": step,
        "config": config.to_dict(),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "history": {
            k: torch.tensor(v, dtype=torch.float64 if k != "step" else torch.int64) for k, v in history.items()
        },
    }
    torch.save(state, tmp / STATE_FILE)
    (tmp / INFO_FILE).write_text(json.dumps({"step": step, "seed": config.seed, "config": config.to_dict()}, indent=1))
    if final.exists():  # only when not resuming: a checkpoint of an earlier run is replaced
        shutil.rmtree(final)
    tmp.rename(final)
    return final


def _load_state(path: Path, config: DynamicsConfig) -> dict[str, Any]:
    state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    saved = state["config"]
    if saved != config.to_dict():
        differing = sorted(k for k in set(saved) | set(config.to_dict()) if saved.get(k) != config.to_dict().get(k))
        raise ValueError(
            f"{path} was trained with another dynamics config (differs in {differing}): delete its directory "
            "or train into another out_dir"
        )
    return state


def train_transformer(
    config: DynamicsConfig,
    out_dir: str | Path,
    device: torch.device | str = "cpu",
    resume: bool = True,
    stop_after: int | None = None,
    progress: bool = True,
    progress_file: Any = None,
) -> DynamicsRun:
    """Train the model of ``config`` from scratch (or resume), saving every scheduled checkpoint.

    Each checkpoint ``out_dir/step{N:06d}/`` is a self-contained Hugging Face directory (``config.json``,
    ``model.safetensors``, tokenizer files) that ``svalign.models`` loads as a local-path source, plus
    ``training_state.pt`` (weights, optimizer state, step, config, loss history) and ``svalign_checkpoint.json``.

    Determinism: the init and every batch are pure functions of the seed (and step), there is no dropout, and the
    optimizer state is saved exactly, so on the CPU a run resumed from any checkpoint ends with bit-identical
    weights to an uninterrupted run with the same thread count. On CUDA the same holds when deterministic
    algorithms are on (``svalign.runtime.configure_torch``).

    Args:
        config: the run.
        out_dir: directory of the checkpoints (created).
        device: torch device for training.
        resume: continue from the last complete checkpoint in ``out_dir`` (its config must equal ``config``);
            False deletes the checkpoints in ``out_dir`` and starts from scratch.
        stop_after: stop after this update (checkpoints up to it are written), e.g. to simulate an interruption.
        progress: show a tqdm bar (on ``progress_file``, default stderr).

    Raises:
        TrainingDivergedError: a loss became NaN or infinite; the message names the step and seed.
        ValueError: ``out_dir`` holds checkpoints of another config.
    """
    wall = time.perf_counter()
    device = torch.device(device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    schedule = set(config.schedule())
    last = config.steps if stop_after is None else min(config.steps, stop_after)

    model = build_model(config, device)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    tokenizer = build_tokenizer(config)
    history: dict[str, list] = {"step": [], "loss": [], "icl_loss": [], "lr": []}

    start, resumed_from = 0, None
    if not resume:
        for path in checkpoint_dirs(out_dir).values():
            shutil.rmtree(path)
    existing = {s: p for s, p in checkpoint_dirs(out_dir).items() if s in schedule}
    if existing:
        resumed_from, path = max(existing.items())
        state = _load_state(path, config)
        # The training state keeps its own copy of the weights under the module's parameter names (safetensors
        # files use the checkpoint names, e.g. embed_out for lm_head), copied into the parameters the optimizer holds.
        model.load_state_dict({k: v.to(device) for k, v in state["model"].items()})
        optimizer.load_state_dict(state["optimizer"])
        history = {k: v.tolist() for k, v in state["history"].items()}
        start = resumed_from
        log.info("resuming %s from checkpoint step %d", out_dir, resumed_from)
    else:
        _save_checkpoint(out_dir, 0, model, optimizer, tokenizer, config, history)

    bar = tqdm(
        range(start + 1, last + 1),
        disable=not progress,
        file=progress_file,
        mininterval=5.0,
        desc=f"dynamics seed {config.seed}",
    )
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = config.lr * _lr_factor(config, step)
        batch = repeat_batch(config, config.batch_size, config.seed, "train", step).to(device)
        loss, icl_loss = sequence_losses(model, batch)
        loss_value, icl_value = loss.item(), icl_loss.item()
        if not (math.isfinite(loss_value) and math.isfinite(icl_value)):
            raise TrainingDivergedError(
                f"dynamics training diverged at step {step} (seed {config.seed}): loss {loss_value}, in-context "
                f"loss {icl_value}. Lower lr (now {config.lr:g}) or set max_grad_norm. Checkpoints up to step "
                f"{max(s for s in schedule if s < step)} are in {out_dir}."
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        optimizer.step()
        if step % config.log_every == 0 or step == config.steps:
            history["step"].append(step)
            history["loss"].append(loss_value)
            history["icl_loss"].append(icl_value)
            history["lr"].append(optimizer.param_groups[0]["lr"])
            bar.set_postfix(loss=f"{loss_value:.3f}", icl=f"{icl_value:.3f}", refresh=False)
        if step in schedule:
            _save_checkpoint(out_dir, step, model, optimizer, tokenizer, config, history)
    bar.close()
    seconds = time.perf_counter() - wall
    log.info("dynamics seed %d: trained to step %d on %s in %.1f s", config.seed, last, device, seconds)
    checkpoints = {s: p for s, p in checkpoint_dirs(out_dir).items() if s in schedule and s <= last}
    return DynamicsRun(config, checkpoints, {k: np.asarray(v) for k, v in history.items()}, resumed_from, seconds)


# --------------------------------------------------------------------------------------------------
# Head scores
# --------------------------------------------------------------------------------------------------


def induction_score(pattern: torch.Tensor, period: torch.Tensor | int, start: torch.Tensor | int = 0) -> torch.Tensor:
    """Mean attention from each token of the second copy to the position right after its first occurrence.

    For a segment of length L starting at ``start``, the query at position t of the copy
    (``start + L <= t < start + 2L``) holds the token first seen at t − L; an induction head attends to the
    token after it, key t − L + 1. The score averages that attention weight over those queries and the batch.

    Args:
        pattern: attention weights ``[batch, head, query, key]`` (rows sum to 1).
        period: segment length L, an int or ``[batch]``.
        start: first position of the segment, an int or ``[batch]``.

    Returns:
        ``[head]`` scores in [0, 1] (1: a perfect induction head).
    """
    b, h, T, _ = pattern.shape
    device = pattern.device
    period = torch.as_tensor(period, device=device).expand(b)
    start = torch.as_tensor(start, device=device).expand(b)
    queries = _in_copy(T, start, period)  # [b, T]
    keys = (torch.arange(T, device=device) - period.unsqueeze(1) + 1).clamp(min=0)  # [b, T]
    weights = pattern.gather(-1, keys[:, None, :, None].expand(b, h, T, 1)).squeeze(-1)  # [b, h, T]
    mask = queries.unsqueeze(1).to(pattern.dtype)
    return (weights * mask).sum((0, 2)) / mask.sum((0, 2)).clamp_min(1)


def previous_token_score(pattern: torch.Tensor) -> torch.Tensor:
    """Mean attention from each position t >= 1 to t − 1.

    Args:
        pattern: attention weights ``[batch, head, query, key]``.

    Returns:
        ``[head]`` scores in [0, 1] (1: a perfect previous-token head).
    """
    return pattern.diagonal(offset=-1, dim1=-2, dim2=-1).mean(dim=(0, -1))  # entries [.., t, t − 1], t >= 1


def checkpoint_info(path: str | Path) -> dict[str, Any]:
    """``{"step", "seed", "config"}`` of a checkpoint directory written by :func:`train_transformer`."""
    info = Path(path) / INFO_FILE
    if not info.is_file():
        raise ValueError(f"{path}: not a dynamics checkpoint (no {INFO_FILE})")
    return json.loads(info.read_text())


def checkpoint_scores(
    checkpoints: Sequence[str | Path] | Mapping[int, str | Path],
    config: DynamicsConfig,
    device: torch.device | str = "cpu",
    eval_seed: int | None = None,
) -> dict[str, np.ndarray]:
    """Induction and previous-token scores of every layer × head of every checkpoint, with its losses.

    Every checkpoint is loaded from its directory (``AutoModelForCausalLM``, eager attention so the patterns are
    returned) and run on one fixed evaluation batch ``repeat_batch(config, eval_batch_size, eval_seed, "eval")``.

    Args:
        checkpoints: checkpoint directories (or ``{step: directory}``); the step is read from each directory.
        eval_seed: seed of the evaluation batch (default ``config.seed``).

    Returns:
        Column data for :data:`DYNAMICS_HEAD_SCORES` without the key columns ``model`` and ``seed``: rows by step,
        layer, head.
    """
    from transformers import AutoModelForCausalLM

    paths = list(checkpoints.values()) if isinstance(checkpoints, Mapping) else list(checkpoints)
    device = torch.device(device)
    batch = repeat_batch(config, config.eval_batch_size, config.seed if eval_seed is None else eval_seed, "eval")
    batch = batch.to(device)
    rows: dict[str, list] = {k: [] for k in ("step", "layer", "head", "induction_score", "previous_token_score")}
    rows.update(loss=[], icl_loss=[])
    infos = {Path(p): checkpoint_info(p) for p in paths}
    for path, info in sorted(infos.items(), key=lambda item: item[1]["step"]):
        step = info["step"]
        # The evaluation batch must be in the checkpoint's vocabulary and context.
        trained = {k: info["config"].get(k) for k in ("vocab_size", "seq_len")}
        if trained != {k: getattr(config, k) for k in trained}:
            raise ValueError(f"{path} was trained with {trained}, but the scores are asked for {config}")
        model = AutoModelForCausalLM.from_pretrained(str(path), attn_implementation="eager", dtype=torch.float32)
        model.to(device).eval()
        with torch.no_grad():
            output = model(input_ids=batch.tokens, output_attentions=True)
            per_token = torch.nn.functional.cross_entropy(
                output.logits[:, :-1].flatten(0, 1), batch.tokens[:, 1:].flatten(), reduction="none"
            ).view(batch.tokens.shape[0], -1)
        mask = batch.icl_mask()
        loss, icl = float(per_token.mean()), float((per_token * mask).sum() / mask.sum())
        patterns = torch.stack(output.attentions, 0)  # [layer, b, h, q, k]
        L, _, H = patterns.shape[:3]
        flat = patterns.transpose(0, 1).flatten(1, 2)  # [b, layer·head, q, k]: one call scores every head
        rows["induction_score"].append(induction_score(flat, batch.period, batch.start).cpu().numpy())
        rows["previous_token_score"].append(previous_token_score(flat).cpu().numpy())
        rows["step"].append(np.full(L * H, step))
        rows["layer"].append(np.repeat(np.arange(L), H))
        rows["head"].append(np.tile(np.arange(H), L))
        rows["loss"].append(np.full(L * H, loss))
        rows["icl_loss"].append(np.full(L * H, icl))
    return {k: np.concatenate(v) for k, v in rows.items()}


# --------------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------------

_STR, _I64, _F64 = pa.string(), pa.int64(), pa.float64()
_RUN_KEYS = (
    Column("model", _STR, "name of the trained dynamics model (key of config `dynamics`)"),
    Column("seed", _I64, "training seed (init and data)"),
)


def training_log_table(run: DynamicsRun, model: str) -> dict[str, Any]:
    """Column data for :data:`DYNAMICS_TRAINING_LOG`."""
    n = len(run.log["step"])
    return {
        "model": [model] * n,
        "seed": [run.config.seed] * n,
        **{k: run.log[k] for k in ("step", "loss", "icl_loss", "lr")},
    }


def head_scores_table(scores: Mapping[str, np.ndarray], model: str, seed: int) -> dict[str, Any]:
    """Column data for :data:`DYNAMICS_HEAD_SCORES` from :func:`checkpoint_scores`."""
    n = len(scores["step"])
    return {"model": [model] * n, "seed": [seed] * n, **dict(scores)}


def write_training_log(run: DynamicsRun, path: str | Path, model: str) -> Path:
    """Write the training log of ``run`` with its provenance (stage ``dynamics_train``)."""
    record = provenance("dynamics_train", {"model": model, **run.config.to_dict()}, seed=run.config.seed)
    return write_table(path, DYNAMICS_TRAINING_LOG, training_log_table(run, model), record)


def write_head_scores(scores: Mapping[str, np.ndarray], path: str | Path, model: str, config: DynamicsConfig) -> Path:
    """Write :func:`checkpoint_scores` output with its provenance (stage ``dynamics_scores``)."""
    record = provenance("dynamics_scores", {"model": model, **config.to_dict()}, seed=config.seed)
    return write_table(path, DYNAMICS_HEAD_SCORES, head_scores_table(scores, model, config.seed), record)


# --------------------------------------------------------------------------------------------------
# Workflow glue: resuming, the checkpoint manifest, SAD across checkpoints
# --------------------------------------------------------------------------------------------------


def write_manifest(path: str | Path, out_dir: str | Path, config: DynamicsConfig) -> Path:
    """Write the list of scheduled checkpoints (step -> directory) atomically; fails if one is missing."""
    found = checkpoint_dirs(out_dir)
    missing = [step for step in config.schedule() if step not in found]
    if missing:
        raise RuntimeError(f"{out_dir}: checkpoints of steps {missing} are missing after training")
    manifest = {"config": config.to_dict(), "checkpoints": {str(s): str(found[s]) for s in config.schedule()}}
    return write_text(path, json.dumps(manifest, indent=1) + "\n")


def read_manifest(path: str | Path) -> dict[int, Path]:
    """Checkpoint directories by step, from :func:`write_manifest`'s file."""
    manifest = json.loads(Path(path).read_text())
    return {int(step): Path(directory) for step, directory in manifest["checkpoints"].items()}


def dynamics_sad_table(
    summaries: Mapping[str, Any],
    checkpoints: Mapping[str, Mapping[str, Any]],
    scores: Any | None,
    head: Mapping[str, int] | None,
) -> dict[str, Any]:
    """Column data for :data:`DYNAMICS_SAD`.

    Args:
        summaries: checkpoint name -> its SAD summary DataFrame (:data:`svalign.sad.SAD_SUMMARY`).
        checkpoints: checkpoint name -> ``{"step", "ours", ...}`` (:func:`svalign.dynamics_config.dynamics_models`).
        scores: DataFrame of :data:`DYNAMICS_HEAD_SCORES` (our series) or None.
        head: ``{"layer", "head"}`` to track, or None for the best induction score at the last checkpoint.

    Raises:
        ValueError: no head given and no scores to choose by, or the head does not exist.
    """
    import pandas as pd

    frames = []
    for name, summary in summaries.items():
        entry = checkpoints[name]
        frame = summary[
            [
                "layer",
                "head",
                "n_pairs",
                "median_n_recon",
                "null_median_n_recon",
                "median_sparseness",
                "null_median_sparseness",
            ]
        ].copy()
        frame.insert(0, "step", int(entry["step"]))
        frame.insert(0, "series", "ours" if entry.get("ours") else "external")
        frame.insert(0, "checkpoint", name)
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    score_columns = ["induction_score", "previous_token_score", "loss", "icl_loss"]
    if scores is not None:
        table = table.merge(scores[["step", "layer", "head", *score_columns]], on=["step", "layer", "head"], how="left")
    else:
        for column in score_columns:
            table[column] = float("nan")
    if head is None:
        if scores is None:
            raise ValueError("dynamics.head is needed: there are no induction scores to choose a head by")
        last = table[table["step"] == table["step"].max()]
        best = last.loc[last["induction_score"].idxmax()]
        head = {"layer": int(best["layer"]), "head": int(best["head"])}
    table["chosen"] = (table["layer"] == head["layer"]) & (table["head"] == head["head"])
    if not table["chosen"].any():
        raise ValueError(f"dynamics.head {dict(head)} is not a head of these checkpoints")
    table = table.sort_values(["step", "layer", "head"], kind="stable")
    return {column.name: table[column.name].to_numpy() for column in DYNAMICS_SAD.columns}
