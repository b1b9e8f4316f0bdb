"""The dynamics stage's model and its training: a small ``GPTNeoXForCausalLM`` trained from scratch with AdamW,
resumable bit for bit, with every scheduled checkpoint a self-contained Hugging Face directory written atomically.

The model has Pythia's architecture (GPT-NeoX: rotary positions, q/k/v biases, parallel attention and MLP, dropout
0, seeded init). TransformerBridge boots a checkpoint from its local directory, and the extract → SVD → SAD stages
handle its heads (rotary offsets: set ``svd.max_offset >= seq_len − 1``).

Training follows SAELens' ``SAETrainer``: a :class:`Trainer` holds the model, optimizer and loss history;
:meth:`Trainer.resume_or_start` restores the last checkpoint (or writes step 0), :meth:`Trainer.fit` runs the
updates (:meth:`Trainer.train_step`, :meth:`Trainer.log_step`, :meth:`Trainer.save_checkpoint`), and
:func:`train_transformer` ties them together.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from svalign.dynamics.config import RESERVED_TOKENS, DynamicsConfig, checkpoint_name, checkpoint_step
from svalign.dynamics.task import build_tokenizer, repeat_batch, sequence_losses
from svalign.runtime import TrainingDivergedError, derive_seed

__all__ = [
    "INFO_FILE",
    "STATE_FILE",
    "DynamicsRun",
    "Trainer",
    "build_model",
    "can_resume",
    "checkpoint_dirs",
    "checkpoint_info",
    "train_transformer",
    "training_log_columns",
]

log = logging.getLogger(__name__)

STATE_FILE = "training_state.pt"
"""Training state in each checkpoint: weights, optimizer state, step, config and loss history."""
INFO_FILE = "svalign_checkpoint.json"
"""JSON summary of each checkpoint: ``{"step", "seed", "config"}`` (readable without torch)."""
LOG_COLUMNS = ("step", "loss", "icl_loss", "lr")


# --------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------


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
        bos_token_id=RESERVED_TOKENS.index("<bos>"),
        eos_token_id=RESERVED_TOKENS.index("<bos>"),
        pad_token_id=RESERVED_TOKENS.index("<pad>"),
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


# --------------------------------------------------------------------------------------------------
# Checkpoint directories
# --------------------------------------------------------------------------------------------------


def checkpoint_dirs(out_dir: str | Path) -> dict[int, Path]:
    """Complete checkpoints under ``out_dir`` (directories named by :func:`~svalign.dynamics.config.checkpoint_name`
    with training state), by step.

    A checkpoint directory appears under its final name only once fully written (temp dir + rename), so any
    such directory is complete; temporary ``.step*.tmp`` directories of an interrupted write are ignored.
    """
    out_dir = Path(out_dir)
    found = {}
    if out_dir.is_dir():
        for path in out_dir.iterdir():
            step = checkpoint_step(path.name)
            if step is not None and path.is_dir() and (path / STATE_FILE).is_file():
                found[step] = path
    return dict(sorted(found.items()))


def checkpoint_info(path: str | Path) -> dict[str, Any]:
    """``{"step", "seed", "config"}`` of a checkpoint directory written by :func:`train_transformer`."""
    info = Path(path) / INFO_FILE
    if not info.is_file():
        raise ValueError(f"{path}: not a dynamics checkpoint (no {INFO_FILE})")
    return json.loads(info.read_text())


def can_resume(out_dir: str | Path, config: DynamicsConfig) -> bool:
    """Whether ``out_dir`` holds a complete checkpoint of exactly ``config`` to resume from.

    ``train_transformer(..., resume=True)`` continues from the last scheduled checkpoint and refuses checkpoints of
    another config; a rule that reruns because the config changed passes ``resume=can_resume(out_dir, config)`` to
    start over instead. Reads only the JSON summaries (no torch).
    """
    schedule = set(config.schedule())
    existing = [path for step, path in checkpoint_dirs(out_dir).items() if step in schedule]
    return bool(existing) and checkpoint_info(existing[-1])["config"] == config.to_dict()


def _load_state(path: Path, config: DynamicsConfig) -> dict[str, Any]:
    """The training state of checkpoint ``path``; fails naming the keys if it was trained with another config."""
    state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    saved = state["config"]
    if saved != config.to_dict():
        differing = sorted(k for k in set(saved) | set(config.to_dict()) if saved.get(k) != config.to_dict().get(k))
        raise ValueError(
            f"{path} was trained with another dynamics config (differs in {differing}): delete its directory "
            "or train into another out_dir"
        )
    return state


# --------------------------------------------------------------------------------------------------
# Training
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


def _lr_factor(config: DynamicsConfig, step: int) -> float:
    """Multiplier of ``lr`` at update ``step`` (1-based): linear warm-up, then constant."""
    return min(1.0, step / config.warmup_steps) if config.warmup_steps else 1.0


class Trainer:
    """One training run of ``config`` into the checkpoint directory ``out_dir``.

    Attributes:
        model, optimizer, tokenizer: the model in training, its AdamW and the tokenizer saved with each checkpoint.
        history: training-batch losses so far, lists under ``step``, ``loss``, ``icl_loss``, ``lr``.
        step: updates done (the weights are those after ``step`` updates).
        resumed_from: the checkpoint step :meth:`resume_or_start` restored (None: started from scratch).
    """

    def __init__(self, config: DynamicsConfig, out_dir: str | Path, device: torch.device | str = "cpu") -> None:
        self.config = config
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.device = torch.device(device)
        self.schedule = set(config.schedule())
        self.model = build_model(config, self.device)
        self.model.train()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.tokenizer = build_tokenizer(config)
        self.history: dict[str, list] = {name: [] for name in LOG_COLUMNS}
        self.step = 0
        self.resumed_from: int | None = None

    def resume_or_start(self, resume: bool = True) -> None:
        """Restore the last scheduled checkpoint in ``out_dir`` (its config must equal ours), or save step 0.

        ``resume=False`` first deletes every checkpoint in ``out_dir``, so training starts from scratch.
        """
        if not resume:
            for path in checkpoint_dirs(self.out_dir).values():
                shutil.rmtree(path)
        existing = {s: p for s, p in checkpoint_dirs(self.out_dir).items() if s in self.schedule}
        if not existing:
            self.save_checkpoint()
            return
        self.resumed_from, path = max(existing.items())
        state = _load_state(path, self.config)
        # The training state keeps its own copy of the weights under the module's parameter names (safetensors
        # files use the checkpoint names, e.g. embed_out for lm_head), copied into the parameters the optimizer holds.
        self.model.load_state_dict({k: v.to(self.device) for k, v in state["model"].items()})
        self.optimizer.load_state_dict(state["optimizer"])
        self.history = {k: v.tolist() for k, v in state["history"].items()}
        self.step = self.resumed_from
        log.info("resuming %s from checkpoint step %d", self.out_dir, self.resumed_from)

    def train_step(self, step: int) -> tuple[float, float]:
        """Update ``step`` (1-based) on its training batch; returns the batch's ``(loss, icl_loss)`` before it.

        Raises:
            TrainingDivergedError: a loss is NaN or infinite (nothing is updated).
        """
        config = self.config
        for group in self.optimizer.param_groups:
            group["lr"] = config.lr * _lr_factor(config, step)
        batch = repeat_batch(config, config.batch_size, config.seed, "train", step).to(self.device)
        loss, icl_loss = sequence_losses(self.model, batch)
        loss_value, icl_value = loss.item(), icl_loss.item()
        if not (math.isfinite(loss_value) and math.isfinite(icl_value)):
            raise TrainingDivergedError(
                f"dynamics training diverged at step {step} (seed {config.seed}): loss {loss_value}, in-context "
                f"loss {icl_value}. Lower lr (now {config.lr:g}) or set max_grad_norm. Checkpoints up to step "
                f"{max(s for s in self.schedule if s < step)} are in {self.out_dir}."
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.max_grad_norm)
        self.optimizer.step()
        self.step = step
        return loss_value, icl_value

    def log_step(self, loss: float, icl_loss: float) -> bool:
        """Record the losses of the last update every ``log_every`` updates and at the last one; True if recorded."""
        if self.step % self.config.log_every and self.step != self.config.steps:
            return False
        self.history["step"].append(self.step)
        self.history["loss"].append(loss)
        self.history["icl_loss"].append(icl_loss)
        self.history["lr"].append(self.optimizer.param_groups[0]["lr"])
        return True

    def save_checkpoint(self) -> Path:
        """Write ``out_dir/step{N:06d}`` for the current step atomically (temp dir + rename): HF model + tokenizer,
        :data:`STATE_FILE` and :data:`INFO_FILE`."""
        config, step = self.config, self.step
        final = self.out_dir / checkpoint_name(step)
        tmp = self.out_dir / f".{final.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)  # left by an interrupted write
        self.model.save_pretrained(str(tmp))
        self.tokenizer.save_pretrained(str(tmp))
        history = {
            k: torch.tensor(v, dtype=torch.float64 if k != "step" else torch.int64) for k, v in self.history.items()
        }
        state = {
            "step": step,
            "config": config.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "history": history,
        }
        torch.save(state, tmp / STATE_FILE)
        summary = {"step": step, "seed": config.seed, "config": config.to_dict()}
        (tmp / INFO_FILE).write_text(json.dumps(summary, indent=1))
        if final.exists():  # only when not resuming: a checkpoint of an earlier run is replaced
            shutil.rmtree(final)
        tmp.rename(final)
        return final

    def fit(self, last: int, progress: bool = True, progress_file: Any = None) -> None:
        """Run updates ``step + 1 … last``, logging losses and saving every scheduled checkpoint on the way."""
        bar = tqdm(
            range(self.step + 1, last + 1),
            disable=not progress,
            file=progress_file,
            mininterval=5.0,
            desc=f"dynamics seed {self.config.seed}",
        )
        for step in bar:
            loss, icl_loss = self.train_step(step)
            if self.log_step(loss, icl_loss):
                bar.set_postfix(loss=f"{loss:.3f}", icl=f"{icl_loss:.3f}", refresh=False)
            if step in self.schedule:
                self.save_checkpoint()
        bar.close()


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
    :data:`STATE_FILE` (weights, optimizer state, step, config, loss history) and :data:`INFO_FILE`.

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
    trainer = Trainer(config, out_dir, device)
    trainer.resume_or_start(resume)
    last = config.steps if stop_after is None else min(config.steps, stop_after)
    trainer.fit(last, progress, progress_file)
    seconds = time.perf_counter() - wall
    log.info("dynamics seed %d: trained to step %d on %s in %.1f s", config.seed, last, trainer.device, seconds)
    checkpoints = {s: p for s, p in checkpoint_dirs(out_dir).items() if s in trainer.schedule and s <= last}
    history = {k: np.asarray(v) for k, v in trainer.history.items()}
    return DynamicsRun(config, checkpoints, history, trainer.resumed_from, seconds)


def training_log_columns(run: DynamicsRun, model: str) -> dict[str, Any]:
    """Column data for :data:`svalign.tables.DYNAMICS_TRAINING_LOG` (``model``: the series' name)."""
    n = len(run.log["step"])
    return {
        "model": [model] * n,
        "seed": [run.config.seed] * n,
        **{k: run.log[k] for k in LOG_COLUMNS},
    }
