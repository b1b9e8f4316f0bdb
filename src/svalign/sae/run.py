"""The SAE stage's two steps, as rules call them: train the sites' SAEs (``train_step``), then align and attribute
(``analyse_step``). Each returns :class:`svalign.io.StepTables`; the rule script writes them."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from svalign import io
from svalign.definitions import FDR_LEVEL, NULLS, POSITION_RANK, POSITIONAL_SHARE
from svalign.io import StepTables
from svalign.nulls import SecondMoment, moment_root
from svalign.sad.config import SADConfig
from svalign.sad.decompose import layer_svd
from svalign.sad.forward import PromptSet, check_offsets, forward_passes
from svalign.sad.run import null_bases
from svalign.sae import align, attribution, dictionary, pretrained
from svalign.sae.config import SAEConfig
from svalign.sae.corpus import corpus_digest
from svalign.stats import benjamini_hochberg
from svalign.svd import ModelSVD
from svalign.tables import (
    SAE_ALIGNMENT,
    SAE_ATTRIBUTION,
    SAE_DICTIONARY,
    SAE_HEADS,
    SAE_QUALITY,
    SAE_SITES,
    SAE_TOKENS,
)

__all__ = ["analyse_step", "check_sites", "train_step"]

log = logging.getLogger(__name__)


def check_sites(layers: Sequence[int], n_layers: int, model: str) -> None:
    """Fail, naming ``sae.sites.<model>``, when a site's layer is not in the model."""
    bad = [layer for layer in layers if not 0 <= layer < n_layers]
    if bad or not layers:
        raise ValueError(f"sae.sites.{model}: layers {list(layers)} must be non-empty and in 0..{n_layers - 1}")


def train_step(
    bridge: Any,
    weights: Any,
    texts: Sequence[str],
    layers: Sequence[int],
    options: Mapping[str, Any],
    model: str,
    device: torch.device,
    progress_file: Any = None,
    first_sampled: int | None = None,
) -> StepTables:
    """Corpus windows → head inputs at ``layers`` → one SAE per layer: tables tokens, dictionary, quality.

    ``first_sampled``: index of the first sampled-text document in ``texts`` (None: docstrings only); then
    ``sae.sampled_text.share`` of the windows come from the sampled text.
    """
    config = SAEConfig.from_mapping(options)
    check_sites(layers, weights.n_layers, model)
    n_windows, n_train = _windows(config, weights.d_model, bridge.cfg.n_ctx, model)
    sampled = None if first_sampled is None else (first_sampled, float(config.sampled_text.get("share", 0.5)))
    tokens, starts, corpus_tokens = dictionary.corpus_windows(
        bridge.tokenizer, texts, weights.causal, config.context_len, n_windows, config.seed, sampled
    )
    published = pretrained.published_sites(config.pretrained, model, layers)
    hooks, activations, residuals = _collect(bridge, weights, tokens, layers, published, config, progress_file)
    site_columns, quality_rows = [], []
    n_train_tokens = n_train * config.context_len
    for layer, both in activations.items():
        keys = {"model": model, "layer": layer, "hook": hooks[layer]}
        source = (published.get(layer), residuals.get(layer))
        columns, row, sae = _train_site(both, n_train_tokens, config, keys, device, progress_file, source)
        row.update(_loss_columns(bridge, weights, tokens[n_train:], layer, sae, both[:n_train_tokens]))
        site_columns.append(columns)
        quality_rows.append(row)
    corpus = {**corpus_digest(texts), "tokens": corpus_tokens}
    digests = [{**entry, "sha256": pretrained.weights_digest(entry["path"])} for entry in published.values()]
    record = io.provenance(
        "sae_train",
        {"model": model, "layers": list(layers), **config.training(), "corpus": corpus, "published": digests},
        seed=config.seed,
    )
    token_columns = {
        "model": [model] * len(tokens),
        "window": np.arange(len(tokens)),
        "start": starts,
        "heldout": np.arange(len(tokens)) >= n_train,
    }
    tensors = ("b_dec", "second_moment", "position_basis")
    quality_columns = _concat([{k: [v] for k, v in row.items() if k not in tensors} for row in quality_rows])
    quality_columns.update({name: np.stack([row[name] for row in quality_rows]) for name in tensors})
    made = {
        "tokens": (SAE_TOKENS, {**token_columns, "tokens": tokens.numpy()}),
        "dictionary": (SAE_DICTIONARY, _concat(site_columns)),
        "quality": (SAE_QUALITY, quality_columns),
    }
    return StepTables(made, record, row_groups_by={"dictionary": "layer"})


def _collect(
    bridge: Any,
    weights: Any,
    tokens: torch.Tensor,
    layers: Sequence[int],
    published: dict[int, dict[str, Any]],
    config: SAEConfig,
    progress_file: Any,
) -> tuple[dict[int, str], dict[int, torch.Tensor], dict[int, torch.Tensor]]:
    """(layer → head-input hook, layer → head inputs, layer → the residual entering it, for published SAEs that
    read the residual), all ``[tokens, d_model]``, in one forward pass per batch."""
    hooks = {layer: weights.head_input_hook.format(layer=layer) for layer in sorted(layers)}
    residual = {
        ("residual", layer): f"blocks.{layer}.hook_in" for layer, e in published.items() if e["input"] == "residual"
    }
    got = dictionary.collect_head_inputs(
        bridge, tokens, {**hooks, **residual}, config.batch_sequences, progress_file, stop_after=hooks[max(hooks)]
    )
    return hooks, {layer: got[layer] for layer in hooks}, {key[1]: got[key] for key in residual}


def _quality_row(sae: Any, x: torch.Tensor, keys: dict[str, Any], final_loss: float) -> dict[str, Any]:
    """One :data:`SAE_QUALITY` row (plus the latents' ``frequency``) of a trained SAE on its activations ``x``, with
    their second moment E[x xᵀ] (what the covariance null and the fake dictionaries draw from)."""
    quality = dictionary.sae_quality(sae, x)
    norm = dictionary.interference_norm(sae.W_dec.detach())
    log.info(
        "%s layer %d: explained variance %.3f, L0 %.1f, dead %.3f, ||E_X||_2 %.1f",
        *(keys["model"], keys["layer"], quality["explained_variance"], quality["l0"], quality["dead_fraction"], norm),
    )
    return {
        **keys,
        "n_tokens": len(x),
        "n_latents": sae.num_latents,
        "k": sae.cfg.k,
        **quality,
        "interference_norm": norm,
        "final_loss": final_loss,
        "b_dec": sae.b_dec.detach().numpy(),
        "second_moment": _second_moment(x),
    }


def _windows(config: SAEConfig, d_model: int, n_ctx: int, model: str) -> tuple[int, int]:
    """(corpus windows, of which the first ones train the SAE; the rest are held out), after checking that the
    options fit the model."""
    n_latents = config.expansion_factor * d_model
    if config.k > n_latents:
        raise ValueError(
            f"sae.k = {config.k} exceeds the SAE's {n_latents} latents (sae.expansion_factor {config.expansion_factor}"
            f" x d_model {d_model} of {model}): lower sae.k or raise sae.expansion_factor"
        )
    if config.context_len > n_ctx:
        raise ValueError(f"sae.context_len = {config.context_len} exceeds {model}'s context of {n_ctx}")
    n_windows = math.ceil(config.n_tokens / config.context_len)
    n_train = n_windows - max(1, round(n_windows * config.heldout_fraction))
    if n_train < 1:
        fraction = config.heldout_fraction
        raise ValueError(f"sae.heldout_fraction = {fraction} leaves no window of sae.n_tokens to train on")
    return n_windows, n_train


def _train_site(
    activations: torch.Tensor,
    n_train: int,
    config: SAEConfig,
    keys: dict[str, Any],
    device: torch.device,
    progress_file: Any,
    source: tuple[dict[str, Any] | None, torch.Tensor | None] = (None, None),
) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """One site's SAE, trained on the first ``n_train`` rows of ``activations`` (the rest held out): its dictionary
    columns, its quality row (training and held-out quality, second moment, positional subspace) and the SAE."""
    x, heldout = activations[:n_train], activations[n_train:]
    entry, residual = source
    if entry is None:
        site = dictionary.train_sae(x, config, f"{keys['model']} layer {keys['layer']}", device, progress_file)
        sae, final_loss = site.sae.cpu(), site.final_loss
    else:  # a published SAE: nothing to train
        sae = pretrained.load_site(entry, x, None if residual is None else residual[:n_train], config.k, keys)
        final_loss = math.nan
    row = _quality_row(sae, x, keys, final_loss)
    row.update(_heldout_quality(sae, heldout))
    row["position_basis"] = align.position_basis(x, config.context_len, POSITION_RANK).float().numpy()
    return dictionary.dictionary_columns(sae, keys["model"], keys["layer"], row.pop("frequency")), row, sae


LOSS_COLUMNS = ("loss_clean", "loss_sae", "loss_ablated", "loss_recovered")
""":func:`svalign.sae.dictionary.loss_recovered`'s numbers, stored as ``heldout_<name>`` in SAE_QUALITY."""


def _loss_columns(
    bridge: Any, weights: Any, heldout: torch.Tensor, layer: int, sae: Any, train: torch.Tensor
) -> dict[str, float]:
    """The held-out windows' loss recovered with the site's SAE spliced in (NaN for encoders, which have no
    next-token loss, and for models whose head input is the residual itself, with no norm to invert)."""
    if not weights.causal or not weights.head_input_hook.endswith(".ln1.hook_normalized"):
        return {f"heldout_{name}": math.nan for name in LOSS_COLUMNS}
    hooks = (f"blocks.{layer}.hook_in", weights.head_input_hook.format(layer=layer))
    losses = dictionary.loss_recovered(bridge, heldout, hooks, sae, train.mean(0), BATCH_SEQUENCES_LOSS)
    log.info(
        "layer %d held out: next-token loss %.3f clean, %.3f SAE spliced in, %.3f mean-ablated: %.1f%% recovered",
        layer,
        *(losses[name] for name in ("loss_clean", "loss_sae", "loss_ablated")),
        100 * losses["loss_recovered"],
    )
    return {f"heldout_{name}": value for name, value in losses.items()}


BATCH_SEQUENCES_LOSS = 16
"""Windows per forward pass of the loss-recovered test (three passes each, with the full vocabulary's logits)."""


def _heldout_quality(sae: Any, heldout: torch.Tensor) -> dict[str, Any]:
    """The quality columns of a site's SAE on the held-out windows' head inputs."""
    quality = dictionary.sae_quality(sae, heldout)
    log.info("held out: explained variance %.3f, L0 %.1f", quality["explained_variance"], quality["l0"])
    return {
        "n_heldout_tokens": len(heldout),
        "heldout_explained_variance": quality["explained_variance"],
        "heldout_l0": quality["l0"],
        "heldout_dead_fraction": quality["dead_fraction"],
    }


def _second_moment(x: torch.Tensor) -> np.ndarray:
    """E[x xᵀ] ``[d, d]`` of the rows of ``x`` (float64 sums, float32 result)."""
    moment = SecondMoment(1, x.shape[1])
    for part in torch.split(x, 8192):
        moment.update(0, part)
    return moment.matrix[0].float().numpy()


def _site_saes(dictionary_table: pa.Table, quality_table: pa.Table) -> dict[int, tuple[Any, dict[str, Any]]]:
    """layer → (the site's SparseCoder, its quality row) from the training step's tables."""
    quality = io.to_frame(quality_table)
    sites = {}
    for row in quality.to_dict("records"):
        rows = pa.compute.equal(dictionary_table.column("layer"), row["layer"])
        part = dictionary_table.filter(rows)
        sae = dictionary.read_sae(
            io.tensor(part, "encoder"),
            part.column("encoder_bias").to_numpy(),
            io.tensor(part, "decoder"),
            np.asarray(row["b_dec"]),
            int(row["k"]),
        )
        sites[int(row["layer"])] = (sae, {**row, "frequency": part.column("frequency").to_numpy()})
    return sites


def analyse_step(
    bridge: Any,
    weights: Any,
    svds: Mapping[str, ModelSVD],
    dictionary_table: pa.Table,
    quality_table: pa.Table,
    options: Mapping[str, Any],
    sad_config: SADConfig,
    prompt_params: Mapping[str, Any],
    model: str,
) -> StepTables:
    """Alignment of every site head (each variant in ``svds``) and the trained heads' latent-pair attribution.

    Tables ``alignment``, ``heads``, ``attribution``, ``sites`` (SAE_*). ``bridge``/``weights``: the trained model.
    """
    config = SAEConfig.from_mapping(options)
    sites = _site_saes(dictionary_table, quality_table)
    alignments = _alignments(svds, sites, config)
    pairs, active, prompt_quality = _attribute(
        bridge, weights, svds["trained"], sites, config, sad_config, prompt_params
    )
    active_norm = {  # the dictionary's interference over the latents active on the prompts (all if none is)
        layer: dictionary.interference_norm(
            sae.W_dec.detach()[torch.from_numpy(active[layer])] if len(active[layer]) else sae.W_dec.detach()
        )
        for layer, (sae, _) in sites.items()
    }
    alignment_parts, head_rows, site_rows = [], [], []
    for (variant, layer), result in alignments.items():
        quality = sites[layer][1]
        keys = {"model": model, "variant": variant, "layer": layer}
        alignment_parts.append(align.alignment_columns(result, keys, quality["frequency"], config.null_quantile))
        quality = {**quality, **prompt_quality[layer]}
        usable = is_usable(quality, config)
        heads = _head_rows(result, keys, pairs if variant == "trained" else None, config, usable)
        head_rows.extend(heads)
        site = {"n_active_latents": len(active[layer]), "interference_norm_active": active_norm[layer]}
        trained = variant == "trained"  # only the trained heads' firing pairs are attributed
        site.update(_pair_summary(pairs if trained else None, pairs["layer"] == layer if trained else None))
        site.pop("n_pairs")
        site_rows.append(_site_row(result, keys, heads, quality, site, config.top_singular, usable))
    _correct_for_heads(head_rows)
    record = io.provenance(
        "sae_align", {"model": model, **config.to_dict(), "sad": sad_config.to_dict(), **prompt_params}
    )
    pair_columns = {name: pairs[name] for name in SAE_ATTRIBUTION.column_names if name in pairs}
    n_pairs = len(pairs["layer"])
    pair_columns.update(model=[model] * n_pairs, variant=["trained"] * n_pairs)
    made = {
        "alignment": (SAE_ALIGNMENT, _concat(alignment_parts)),
        "heads": (SAE_HEADS, {k: [row[k] for row in head_rows] for k in SAE_HEADS.column_names}),
        "attribution": (SAE_ATTRIBUTION, pair_columns),
        "sites": (SAE_SITES, {k: [row[k] for row in site_rows] for k in SAE_SITES.column_names}),
    }
    return StepTables(made, record)


def _alignments(
    svds: Mapping[str, ModelSVD], sites: dict[int, tuple[Any, dict[str, Any]]], config: SAEConfig
) -> dict[tuple[str, int], align.SiteAlignment]:
    """(variant, layer) → the site's alignment under every null, with the fake-dictionary control."""
    return {
        (variant, layer): align.site_alignment(
            model_svd,
            layer,
            sae.W_dec.detach(),
            config.top_singular,
            config.null_draws,
            config.null_seed,
            torch.from_numpy(np.asarray(quality["second_moment"], dtype=np.float64)),
            config.fake_dictionaries,
            config.null_quantile,
            torch.from_numpy(np.asarray(quality["position_basis"], dtype=np.float64)),
        )
        for variant, model_svd in svds.items()
        for layer, (sae, quality) in sites.items()
    }


def _concat(parts: list[dict[str, Any]]) -> dict[str, Any]:
    return {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]}


USABILITY = ("explained_variance", "heldout_explained_variance", "prompt_explained_variance")
"""An SAE is usable when each of these reaches ``sae.min_explained_variance``: on its training windows, on held-out
windows and on the prompt set whose firing pairs it attributes (and :func:`is_usable`'s loss test)."""


def is_usable(quality: Mapping[str, Any], config: SAEConfig) -> bool:
    """Every :data:`USABILITY` explained variance reaches ``sae.min_explained_variance`` and, where the model has a
    next-token loss, the held-out loss recovered reaches ``sae.min_loss_recovered``."""
    recovered = float(quality["heldout_loss_recovered"])
    loss_ok = math.isnan(recovered) or recovered >= config.min_loss_recovered
    return loss_ok and all(quality[name] >= config.min_explained_variance for name in USABILITY)


RANDOM_COLUMNS = ("match", "latent_share", "pair_share")
"""Per-pair columns of the random-dictionary control, stored as ``random_<name>`` beside the SAE's."""


def random_coders(sites: dict[int, tuple[Any, dict[str, Any]]], seed: int) -> dict[int, attribution.PursuitCoder]:
    """The attribution's random-dictionary control per site: as many directions as the SAE has latents, drawn from
    N(0, M) of the site's head inputs (one fake dictionary), coded with the SAE's k around its b_dec."""
    generator = align.control_stream(seed, "attribution")
    coders = {}
    for layer, (sae, quality) in sorted(sites.items()):
        root = moment_root(torch.from_numpy(np.asarray(quality["second_moment"], dtype=np.float64)))
        atoms = next(align.fake_dictionaries(root, sae.num_latents, 1, generator))
        atoms = align.unit_directions(atoms, atoms.shape[1])
        coders[layer] = attribution.PursuitCoder(atoms, sae.b_dec.detach().clone(), int(sae.cfg.k))
    return coders


def _attribute(
    bridge: Any,
    weights: Any,
    model_svd: ModelSVD,
    sites: dict[int, tuple[Any, dict[str, Any]]],
    config: SAEConfig,
    sad_config: SADConfig,
    prompt_params: Mapping[str, Any],
) -> tuple[dict[str, np.ndarray], dict[int, np.ndarray], dict[int, dict[str, float]]]:
    """Latent-pair attribution of every firing pair at the sites on the prompt set ``sae.prompt_set``, through the
    SAE and through its random-dictionary control (:func:`random_coders`).

    Returns:
        (the pairs' columns, each site's latents active on the prompts, each site's SAE quality on the prompts'
        head inputs: ``prompt_explained_variance``, ``prompt_l0``).
    """
    prompts = PromptSet.build(bridge, weights, config.prompt_set, prompt_params)
    check_offsets(model_svd, prompts.batches)
    nulls = null_bases(model_svd, weights.n_layers, sad_config, layers=sites)  # the SAD stage's own draws
    controls = random_coders(sites, config.null_seed)
    collected = attribution.AttributionCollector(active={layer: set() for layer in sites})
    inputs: dict[int, list[torch.Tensor]] = {layer: [] for layer in sites}
    options = {
        "causal": weights.causal,
        "offsets_used": model_svd.uses_offsets,
        "threshold": sad_config.threshold,
        "skip_first_key": sad_config.skip_first_key,
    }
    chunks = forward_passes(bridge, weights, prompts.batches, sad_config.chunk_prompts, model_svd.augmented)
    for chunk in chunks:
        for layer, (sae, _) in sites.items():
            inputs[layer].append(chunk.head_inputs(layer)[..., : weights.d_model].reshape(-1, weights.d_model))
            svd, layer_inputs = layer_svd(model_svd, layer), chunk.inputs(layer)
            result = attribution.attribute_pairs(layer_inputs, sae, svd, nulls[layer], **options)
            collected.active[layer].update(result.pop("active_latents").tolist())
            if "head" not in result:  # no pair of this layer fired in the chunk
                continue
            control = attribution.attribute_pairs(layer_inputs, controls[layer], svd, [], **options)
            result.update({f"random_{name}": control[name] for name in RANDOM_COLUMNS})
            result["prompt"] = chunk.batch.prompt.numpy()[result.pop("b")]
            result["layer"] = np.full(len(result["head"]), layer)
            collected.add(result)
    pairs = collected.arrays()
    order = np.lexsort((pairs["j"], pairs["t"], pairs["prompt"], pairs["head"], pairs["layer"]))
    active = {layer: np.array(sorted(latents), dtype=np.int64) for layer, latents in collected.active.items()}
    quality = {}
    for layer, (sae, _) in sites.items():
        measured = dictionary.sae_quality(sae, torch.cat(inputs[layer]))
        quality[layer] = {"prompt_explained_variance": measured["explained_variance"], "prompt_l0": measured["l0"]}
    return {k: v[order] for k, v in pairs.items()}, active, quality


def _position_columns(result: align.SiteAlignment, head: int, config: SAEConfig) -> dict[str, Any]:
    """One head's positional share (and flag) and its alignment with the positional subspace projected out."""
    if result.positional_share is None:
        return {
            "positional_share": math.nan,
            "positional": False,
            "statistic_without_position": math.nan,
            "aligned_without_position": False,
        }
    upper = float(torch.quantile(result.null_without_position.double(), config.null_quantile))
    share, statistic = float(result.positional_share[head]), float(result.statistic_without_position[head])
    return {
        "positional_share": share,
        "positional": share > POSITIONAL_SHARE,
        "statistic_without_position": statistic,
        "aligned_without_position": statistic > upper,
    }


def _correct_for_heads(rows: list[dict[str, Any]]) -> None:
    """Benjamini–Hochberg over each variant's site heads, per null and tail: the ``*_bh`` columns of ``rows``."""
    for variant in {row["variant"] for row in rows}:
        mine = [row for row in rows if row["variant"] == variant]
        for null in NULLS:
            for tail in ("aligned", "below"):
                rejected = benjamini_hochberg([row[f"{null}_p_{tail}"] for row in mine], FDR_LEVEL)
                for row, flag in zip(mine, rejected, strict=True):
                    row[f"{null}_{tail}_bh"] = bool(flag)


def _head_rows(
    result: align.SiteAlignment,
    keys: dict[str, Any],
    pairs: dict[str, np.ndarray] | None,
    config: SAEConfig,
    usable: bool,
) -> list[dict[str, Any]]:
    """Rows of :data:`SAE_HEADS` for one site and variant (attribution columns only for the trained variant)."""
    upper = float(torch.quantile(result.null_statistic.double(), config.null_quantile))
    median = float(result.null_statistic.double().median())
    p_values = {
        null: align.monte_carlo_p(result.statistic, result.nulls[null]) if null in result.nulls else (None, None)
        for null in NULLS
    }
    rows = []
    for head, statistic in enumerate(result.statistic.tolist()):
        row = {**keys, "head": head, "statistic": statistic, "null_statistic": upper, "null_median": median}
        row.update(aligned=statistic > upper, sae_usable=usable, **_position_columns(result, head, config))
        if len(result.fake_statistic):  # the head's statistic against the fake dictionaries', upper tail
            fakes = result.fake_statistic[:, head]
            row["fake_p_aligned"] = float(((fakes >= statistic).sum() + 1) / (len(fakes) + 1))
        else:
            row["fake_p_aligned"] = math.nan
        for null, (high, low) in p_values.items():
            row[f"{null}_p_aligned"] = float(high[head]) if high is not None else math.nan
            row[f"{null}_p_below"] = float(low[head]) if low is not None else math.nan
        mine = (pairs["layer"] == keys["layer"]) & (pairs["head"] == head) if pairs is not None else None
        row.update(_pair_summary(pairs, mine))
        rows.append(row)
    return rows


PAIR_RATES = {"match_rate": "match", "null_match_rate": "null_match", "chance_rate": "chance"}
PAIR_RATES |= {"random_match_rate": "random_match"}
"""Head and site columns that are means over firing pairs, and the per-pair column each averages."""
PAIR_SHARES = {name: name for name in ("latent_share", "pair_share", "random_latent_share", "random_pair_share")}
"""Head and site columns that are medians over firing pairs (same names per pair)."""


def _pair_summary(pairs: dict[str, np.ndarray] | None, mine: np.ndarray | None) -> dict[str, Any]:
    """``n_pairs``, the :data:`PAIR_RATES` means and :data:`PAIR_SHARES` medians over the pairs ``mine`` selects
    (NaN when there are none)."""
    n = int(mine.sum()) if mine is not None else 0
    summary: dict[str, Any] = {"n_pairs": n}
    for name, column in PAIR_RATES.items():
        summary[name] = float(pairs[column][mine].mean()) if n else math.nan
    for name, column in PAIR_SHARES.items():
        summary[name] = float(np.median(pairs[column][mine])) if n else math.nan
    return summary


def _site_row(
    result: align.SiteAlignment,
    keys: dict[str, Any],
    heads: list[dict[str, Any]],
    quality: dict[str, Any],
    measured: dict[str, Any],
    n_top: int,
    usable: bool,
) -> dict[str, Any]:
    """The :data:`SAE_SITES` row of one site and variant (``measured``: its active-latent and firing-pair
    columns)."""
    top = torch.cat([result.best["u"][:, :n_top], result.best["v"][:, :n_top]], -1)
    return {
        "model": keys["model"],
        "layer": keys["layer"],
        "variant": keys["variant"],
        "n_heads": len(heads),
        "aligned_fraction": float(np.mean([h["aligned"] for h in heads])),
        "median_best_cos": float(top.double().median()),
        "null_median_best_cos": float(result.null_best.double().median()),
        **measured,
        **{name: float(quality[name]) for name in (*USABILITY, "heldout_loss_recovered")},
        "prompt_l0": float(quality["prompt_l0"]),
        "sae_usable": usable,
        "n_fake_dictionaries": len(result.fake_aligned),
        "fake_aligned_mean": float(result.fake_aligned.mean()) if len(result.fake_aligned) else math.nan,
        "fake_aligned_max": float(result.fake_aligned.mean(1).max()) if len(result.fake_aligned) else math.nan,
    }
