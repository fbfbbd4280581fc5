"""Training losses: regional (chart polygon), pixel baselines, BCE + focal Tversky, focal, CE.

Every loss takes the model's logits plus the batch tensors it needs and averages over *valid*
pixels only (land, nodata and masked chart pixels carry no label). Nothing here synchronises
with the host (no ``.item()``, no data-dependent shapes), so a CUDA training step never stalls
on a loss; empty masks give a zero that keeps the autograd graph instead of a NaN.

:func:`build_loss` turns a name from a config file into a :data:`LossFn` that reads its inputs
from the batch dictionary (``image``, ``target``, ``valid``, and for the regional loss
``groups`` and ``group_targets``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from icetools.errors import ConfigError

LossFn = Callable[[Any, Mapping[str, Tensor]], Tensor]
"""A training loss: ``loss_fn(logits, batch) -> scalar``. ``logits`` is a Tensor, or a list of
Tensors for :func:`deep_supervision`."""

TASK_LOSSES: dict[str, tuple[str, ...]] = {
    "sic": ("regional", "pixel-mse", "pixel-ce"),
    "binary": ("bce-ftl", "focal", "pixel-ce"),
    "multiclass": ("focal", "ce"),
}

DEFAULT_DEEP_SUPERVISION_WEIGHTS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4)

PosWeight = float | str
"""Weight of the positive (foreground) pixels in a BCE term: a number, or ``"auto"``."""

AUTO = "auto"
"""``pos_weight="auto"``: negatives / positives over the batch's valid pixels, clipped."""

AUTO_POS_WEIGHT_MAX = 100.0
"""The largest weight ``"auto"`` gives: one rare-foreground batch must not blow up the gradients."""

LINE_POS_WEIGHT: PosWeight = AUTO
"""The binary task's default weighting of line pixels in the BCE term of ``bce-ftl``, the one place
it is set (:func:`build_loss` applies it). At about 1 % foreground an unweighted BCE first learns
"no line anywhere" (Mohajerani et al. 2021 weighted positives ~727x at 0.14 %); ``"auto"`` balances
the two classes batch by batch, so it follows the foreground share the window sampler produces.
1.0 restores the unweighted loss. To be confirmed by a validation experiment."""

REGIONAL_KL = 0.0
"""Weight of :func:`proportion_kl` added to each polygon's squared error (0: the paper's squared error)."""

REGIONAL_SHARPNESS = 0.05
"""Weight of :func:`sharpness_penalty` next to the regional loss; 0 gives the paper's loss alone.

Chosen on held-out scenes (``python -m bench skill``): a model trained on one scene mapped calm
water inside mixed polygons at 0.3-0.4 SIC on other scenes with the plain loss, at 0.1 with 0.05."""


# --------------------------------------------------------------------------- helpers


def _single_channel(logits: Tensor, *, loss_name: str) -> Tensor:
    """(B,1,H,W) or (B,H,W) -> (B,H,W); any other shape is a model/task mismatch."""
    if logits.ndim == 4 and logits.shape[1] == 1:
        return logits[:, 0]
    if logits.ndim == 3:
        return logits
    raise ConfigError(
        f"loss '{loss_name}' needs one output channel, got logits of shape {tuple(logits.shape)}; "
        "build the model with one output class for this task"
    )


def _as_mask(valid: Tensor | None, like: Tensor) -> Tensor:
    if valid is None:
        return torch.ones(like.shape, dtype=torch.bool, device=like.device)
    return valid.to(device=like.device, dtype=torch.bool)


def _float_dtype(logits: Tensor) -> torch.dtype:
    # Sums over ~1e6 pixels lose too much in half precision: reduce in at least float32.
    return torch.promote_types(logits.dtype, torch.float32)


def _masked_mean(values: Tensor, valid: Tensor) -> Tensor:
    """Mean of ``values`` where ``valid``; 0 (still attached to the graph) when nothing is valid."""
    total = torch.where(valid, values, torch.zeros_like(values)).sum()
    return total / valid.sum().clamp_min(1).to(values.dtype)


def _clean_binary_target(target: Tensor, valid: Tensor, dtype: torch.dtype) -> Tensor:
    # Targets are often NaN on land; zero them *before* any arithmetic so that no NaN reaches
    # the backward pass through the unselected branch of torch.where.
    target = target.to(device=valid.device, dtype=dtype)
    return torch.where(valid, target, torch.zeros_like(target))


# --------------------------------------------------------------------------- losses


def regional_loss(logits: Tensor, groups: Tensor, group_targets: Tensor, *, kl: float = 0.0) -> Tensor:
    """Squared error between each chart polygon's mean predicted SIC and its chart SIC.

    An ice chart gives one concentration per polygon, not per pixel, so the model is asked to
    get the polygon *means* right. ``groups`` (B,H,W) holds compact group indices (0 = ignore,
    1..G = one polygon, possibly spanning several patches of the batch); ``group_targets`` (G+1,)
    the chart SIC of each group. The per-group sums are formed in one ``scatter_add_`` into
    tensors of fixed size G+1, so there is no loop over polygons and no host synchronisation.
    Groups without any pixel, and groups whose target is not finite, get weight 0; the loss is
    the mean over the remaining groups, and 0 (with a graph, finite gradients) if none remain.
    Indices must lie in 0..G (an index beyond G fails inside ``scatter_add_``).
    """
    logits = _single_channel(logits, loss_name="regional")
    dtype = _float_dtype(logits)
    n_slots = group_targets.shape[0]
    probabilities = torch.sigmoid(logits.to(dtype)).reshape(-1)
    index = groups.to(device=logits.device, dtype=torch.int64).reshape(-1)

    sums = torch.zeros(n_slots, dtype=dtype, device=logits.device).scatter_add(
        0, index, probabilities
    )
    counts = torch.zeros(n_slots, dtype=dtype, device=logits.device).scatter_add_(
        0, index, torch.ones_like(probabilities)
    )
    targets = group_targets.to(device=logits.device, dtype=dtype)
    is_group = torch.arange(n_slots, device=logits.device) > 0  # slot 0 collects ignored pixels
    weight = ((counts > 0) & is_group & torch.isfinite(targets)).to(dtype)

    means = sums / counts.clamp_min(1)
    safe_targets = torch.where(weight > 0, targets, torch.zeros_like(targets))
    error = (means - safe_targets) ** 2
    if kl > 0:
        error = error + kl * proportion_kl(means, safe_targets)
    return (error * weight).sum() / weight.sum().clamp_min(1)


def proportion_kl(means: Tensor, targets: Tensor) -> Tensor:
    """KL divergence of the predicted ice share ``means`` from the chart's ``targets``, per polygon.

    The proportion loss of learning from label proportions (Ardehaly & Culotta 2017 use the cross
    -entropy, which differs by the target's entropy: KL is 0 at a perfect mean). Its gradient,
    (m - t) / (m (1 - m)), keeps pushing where the squared error's 2 (m - t) fades: an open-water
    polygon read at 0.03 is pushed 17 times harder.
    """
    m = means.clamp(1e-4, 1 - 1e-4)
    t = targets.clamp(0.0, 1.0)
    return (torch.special.xlogy(t, t) - torch.special.xlogy(t, m)
            + torch.special.xlogy(1 - t, 1 - t) - torch.special.xlogy(1 - t, 1 - m))


def pixel_mse(logits: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
    """Mean squared error of sigmoid(logits) against the chart SIC rasterised to pixels.

    The naive baseline that the regional loss is compared with: every pixel of a polygon is
    told the polygon's SIC, although real ice inside a 50 % polygon is open water or ice.
    """
    logits = _single_channel(logits, loss_name="pixel-mse")
    dtype = _float_dtype(logits)
    valid = _as_mask(valid, logits)
    target = _clean_binary_target(target, valid, dtype)
    return _masked_mean((torch.sigmoid(logits.to(dtype)) - target) ** 2, valid)


def positive_weight(
    target: Tensor, valid: Tensor, pos_weight: PosWeight, *, max_weight: float = AUTO_POS_WEIGHT_MAX
) -> Tensor | None:
    """The BCE weight of positive pixels, or None for no weighting (``pos_weight`` 1).

    ``"auto"`` is negatives / positives over the valid pixels of the whole batch (soft targets count
    as fractions), clipped to [1, ``max_weight``]: it only ever favours the rare foreground, and a
    batch without any foreground gets ``max_weight`` (its positives term is zero anyway) instead of
    a division by zero. Computed on the device, with no host synchronisation.
    """
    if isinstance(pos_weight, str) and pos_weight != AUTO:
        raise ConfigError(f"pos_weight must be a number or {AUTO!r}, got {pos_weight!r}")
    if pos_weight == AUTO:
        weight = valid.to(target.dtype)
        positives = (target * weight).sum()
        negatives = ((1 - target) * weight).sum()
        # A floor far below one pixel keeps soft targets exact and an empty batch finite (-> the clip).
        return (negatives / positives.clamp_min(1e-6)).clamp(1.0, max_weight).detach()
    if float(pos_weight) == 1.0:
        return None
    return torch.tensor(float(pos_weight), dtype=target.dtype, device=target.device)


def _bce(logits: Tensor, target: Tensor, pos_weight: Tensor | None) -> Tensor:
    return F.binary_cross_entropy_with_logits(logits, target, reduction="none", pos_weight=pos_weight)


def pixel_bce(
    logits: Tensor,
    target: Tensor,
    valid: Tensor | None = None,
    *,
    pos_weight: PosWeight = 1.0,
    pos_weight_max: float = AUTO_POS_WEIGHT_MAX,
) -> Tensor:
    """Binary cross-entropy with soft targets (0..1), mean over valid pixels ("pixel-ce").

    ``pos_weight`` multiplies the foreground term, -w*y*log(p) - (1-y)*log(1-p), as torch's
    ``pos_weight`` does; the mean still divides by the number of valid pixels. See
    :func:`positive_weight` for ``"auto"``.
    """
    logits = _single_channel(logits, loss_name="pixel-ce")
    dtype = _float_dtype(logits)
    valid = _as_mask(valid, logits)
    target = _clean_binary_target(target, valid, dtype)
    weight = positive_weight(target, valid, pos_weight, max_weight=pos_weight_max)
    return _masked_mean(_bce(logits.to(dtype), target, weight), valid)


def focal_tversky(
    logits: Tensor,
    target: Tensor,
    valid: Tensor | None = None,
    *,
    alpha: float = 0.7,
    beta: float = 0.3,
    gamma: float = 4 / 3,
    smooth: float = 1.0,
) -> Tensor:
    """Focal Tversky loss, per image then averaged over the batch.

    TI = (TP + s) / (TP + alpha*FN + beta*FP + s) with soft counts over valid pixels and
    FTL = (1 - TI) ** (1/gamma). Convention of Abraham & Khan's own code: ``alpha`` weights
    FALSE NEGATIVES (alpha > beta favours recall, which thin grounding lines need).
    segmentation_models_pytorch and MONAI put alpha on false positives and apply gamma as a
    plain exponent, so their numbers differ for the same arguments.
    """
    logits = _single_channel(logits, loss_name="bce-ftl")
    dtype = _float_dtype(logits)
    valid = _as_mask(valid, logits)
    target = _clean_binary_target(target, valid, dtype)
    weight = valid.to(dtype)
    probabilities = torch.sigmoid(logits.to(dtype)) * weight
    target = target * weight
    true_pos = (probabilities * target).sum(dim=(-2, -1))
    false_neg = ((1 - probabilities) * target).sum(dim=(-2, -1))
    false_pos = (probabilities * (1 - target) * weight).sum(dim=(-2, -1))
    tversky = (true_pos + smooth) / (true_pos + alpha * false_neg + beta * false_pos + smooth)
    distance = 1 - tversky
    # (x)**(1/gamma) has an infinite slope at 0 (a perfect or empty image): evaluate the power on
    # a clamped copy and select 0 there, so the gradient is 0 instead of inf * 0 = NaN.
    safe = distance.clamp_min(torch.finfo(dtype).tiny)
    focal = torch.where(distance > 0, safe ** (1 / gamma), torch.zeros_like(distance))
    return focal.mean()


def bce_ftl(
    logits: Tensor,
    target: Tensor,
    valid: Tensor | None = None,
    *,
    lam: float = 0.25,
    alpha: float = 0.7,
    beta: float = 0.3,
    gamma: float = 4 / 3,
    smooth: float = 1.0,
    pos_weight: PosWeight = 1.0,
    pos_weight_max: float = AUTO_POS_WEIGHT_MAX,
) -> Tensor:
    """lam * BCE + (1 - lam) * focal Tversky, for thin, rare foreground (grounding lines).

    BCE keeps pixel-wise gradients well behaved early in training; the focal Tversky term
    (see :func:`focal_tversky`; alpha weights FALSE NEGATIVES as in Abraham & Khan's code, not
    false positives as in smp/MONAI) stops the empty background from dominating. ``pos_weight``
    weights the line pixels in the BCE term only (see :func:`pixel_bce`); called directly the loss
    is unweighted, while :func:`build_loss` applies :data:`LINE_POS_WEIGHT`.
    """
    bce = pixel_bce(logits, target, valid, pos_weight=pos_weight, pos_weight_max=pos_weight_max)
    ftl = focal_tversky(logits, target, valid, alpha=alpha, beta=beta, gamma=gamma, smooth=smooth)
    return lam * bce + (1 - lam) * ftl


def focal_loss(
    logits: Tensor,
    target: Tensor,
    valid: Tensor | None = None,
    *,
    gamma: float = 3.0,
    pos_weight: PosWeight = 1.0,
    pos_weight_max: float = AUTO_POS_WEIGHT_MAX,
) -> Tensor:
    """Focal loss (Lin et al.), mean over valid pixels; gamma = 0 gives plain BCE / CE.

    One channel (B,1,H,W) or (B,H,W): binary with float targets in 0..1, and ``pos_weight``
    weights the foreground term of its BCE (see :func:`pixel_bce`). K > 1 channels: softmax over
    classes with int64 class targets (B,H,W); targets at invalid pixels may hold any value (e.g.
    255) since they are never looked up; ``pos_weight`` must stay 1 there.
    """
    dtype = _float_dtype(logits)
    if logits.ndim == 3 or (logits.ndim == 4 and logits.shape[1] == 1):
        logits = _single_channel(logits, loss_name="focal")
        valid = _as_mask(valid, logits)
        target = _clean_binary_target(target, valid, dtype)
        logits = logits.to(dtype)
        bce = _bce(logits, target, positive_weight(target, valid, pos_weight, max_weight=pos_weight_max))
        probabilities = torch.sigmoid(logits)
        p_true = probabilities * target + (1 - probabilities) * (1 - target)
        return _masked_mean((1 - p_true) ** gamma * bce, valid)

    if pos_weight != 1.0:
        raise ConfigError(
            f"pos_weight applies to one-channel (binary) logits, got {logits.shape[1]} classes: drop it"
        )
    valid, target = _clean_class_target(logits, target, valid)
    log_probs = F.log_softmax(logits.to(dtype), dim=1)
    log_p_true = log_probs.gather(1, target.unsqueeze(1)).squeeze(1)
    focal = -((1 - log_p_true.exp()) ** gamma) * log_p_true
    return _masked_mean(focal, valid)


def _clean_class_target(
    logits: Tensor, target: Tensor, valid: Tensor | None
) -> tuple[Tensor, Tensor]:
    if logits.ndim != 4:
        raise ConfigError(
            f"multi-class losses need logits of shape (B,K,H,W), got {tuple(logits.shape)}"
        )
    valid = _as_mask(valid, logits[:, 0])
    target = target.to(device=logits.device, dtype=torch.int64)
    # Out-of-range labels at invalid pixels (nodata = 255, say) must not reach gather/CE.
    return valid, torch.where(valid, target, torch.zeros_like(target))


def cross_entropy(logits: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
    """Softmax cross-entropy for K-class maps: logits (B,K,H,W), int64 target, valid pixels only."""
    valid, target = _clean_class_target(logits, target, valid)
    ce = F.cross_entropy(logits.to(_float_dtype(logits)), target, reduction="none")
    return _masked_mean(ce, valid)


def deep_supervision(
    loss_fn: LossFn, weights: Sequence[float] = DEFAULT_DEEP_SUPERVISION_WEIGHTS
) -> LossFn:
    """Wrap ``loss_fn`` for a model with several heads: sum_i w_i * loss(head_i) / sum(w).

    Heads come in the order the model returns them, the final head last (it gets the largest
    default weight). A head coarser than the target is upsampled bilinearly to the target size
    first. A single Tensor (a model in eval mode returning only its final head) is passed
    straight to ``loss_fn``.
    """
    weights = tuple(float(w) for w in weights)
    if not weights or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ConfigError(
            f"deep supervision weights must be non-negative with a positive sum, got {weights}"
        )
    total = sum(weights)

    def supervised(logits: Tensor | Sequence[Tensor], batch: Mapping[str, Tensor]) -> Tensor:
        if isinstance(logits, Tensor):
            return loss_fn(logits, batch)
        if len(logits) != len(weights):
            raise ConfigError(
                f"the model returned {len(logits)} heads but {len(weights)} deep supervision "
                "weights were given; give one weight per head"
            )
        size = _target_size(batch)
        loss = sum(
            weight * loss_fn(_resize(head, size), batch) for weight, head in zip(weights, logits)
        )
        return loss / total

    return supervised


def _target_size(batch: Mapping[str, Tensor]) -> tuple[int, int] | None:
    for key in ("valid", "target", "groups"):
        if key in batch:
            return tuple(batch[key].shape[-2:])  # type: ignore[return-value]
    return None


def _resize(logits: Tensor, size: tuple[int, int] | None) -> Tensor:
    if size is None or tuple(logits.shape[-2:]) == size:
        return logits
    squeeze = logits.ndim == 3
    batched = logits.unsqueeze(1) if squeeze else logits
    resized = F.interpolate(batched, size=size, mode="bilinear", align_corners=False)
    return resized[:, 0] if squeeze else resized


# --------------------------------------------------------------------------- registry


def _batch_value(batch: Mapping[str, Tensor], key: str, loss_name: str) -> Tensor:
    if key not in batch:
        raise ConfigError(
            f"loss '{loss_name}' needs '{key}' in the batch, found {sorted(batch)}; "
            "use a data loader made for this task"
        )
    return batch[key]


def sharpness_penalty(logits: Tensor, valid: Tensor) -> Tensor:
    """Mean of 4 p (1 - p) over the valid pixels: 0 where the model says ice or water, 1 at p = 0.5.

    A chart polygon's mean says how much of it is ice, not where. At 40 m most pixels are ice or
    water, so a small weight on this term asks the model to decide per pixel (entropy minimisation
    as in learning from label proportions) instead of spreading the polygon's mean over pixels it
    cannot tell apart, such as calm water inside a mixed polygon.
    """
    logits = _single_channel(logits, loss_name="regional")
    p = torch.sigmoid(logits.to(_float_dtype(logits)))
    return _masked_mean(4 * p * (1 - p), _as_mask(valid, p))


def _regional(sharpness: float, kl: float) -> LossFn:
    def loss(logits: Tensor, batch: Mapping[str, Tensor]) -> Tensor:
        groups = _batch_value(batch, "groups", "regional")
        if "valid" in batch:  # belt and braces: a pixel marked invalid never counts
            groups = torch.where(batch["valid"].to(groups.device), groups, torch.zeros_like(groups))
        value = regional_loss(logits, groups, _batch_value(batch, "group_targets", "regional"), kl=kl)
        if sharpness > 0:
            value = value + sharpness * sharpness_penalty(logits, groups > 0)
        return value

    return loss


def _pixel_loss(function: Callable[..., Tensor], name: str, **options: float | str) -> LossFn:
    def loss(logits: Tensor, batch: Mapping[str, Tensor]) -> Tensor:
        target = _batch_value(batch, "target", name)
        return function(logits, target, batch.get("valid"), **options)

    return loss


_UNWEIGHTED: dict[str, PosWeight] = {"pos_weight": 1.0, "pos_weight_max": AUTO_POS_WEIGHT_MAX}
_OPTIONS: dict[str, dict[str, PosWeight]] = {
    "regional": {"sharpness": REGIONAL_SHARPNESS, "kl": REGIONAL_KL},
    "pixel-mse": {},
    "pixel-ce": dict(_UNWEIGHTED),
    "bce-ftl": {
        "lam": 0.25, "alpha": 0.7, "beta": 0.3, "gamma": 4 / 3, "smooth": 1.0,
        "pos_weight": LINE_POS_WEIGHT, "pos_weight_max": AUTO_POS_WEIGHT_MAX,
    },
    "focal": {"gamma": 3.0, **_UNWEIGHTED},
    "ce": {},
}
LOSS_NAMES: tuple[str, ...] = tuple(_OPTIONS)


def _check_options(name: str, options: dict[str, PosWeight]) -> None:
    def bad(message: str) -> ConfigError:
        return ConfigError(f"loss '{name}': {message}")

    for key, value in options.items():
        if key == "pos_weight" and value == AUTO:
            continue
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            hint = " or 'auto'" if key == "pos_weight" else ""
            raise bad(f"option '{key}' must be a number{hint}, got {value!r}")
        if not math.isfinite(value):
            raise bad(f"option '{key}' must be finite, got {value!r}")
    if "pos_weight" in options:
        if options["pos_weight"] != AUTO and options["pos_weight"] <= 0:
            raise bad(f"pos_weight must be > 0 or 'auto', got {options['pos_weight']}")
        if options["pos_weight_max"] < 1:
            raise bad(f"pos_weight_max must be >= 1, got {options['pos_weight_max']}")
    if name == "bce-ftl":
        if not 0 <= options["lam"] <= 1:
            raise bad(f"lam must lie in [0, 1], got {options['lam']}")
        if options["alpha"] < 0 or options["beta"] < 0 or options["smooth"] < 0:
            raise bad("alpha, beta and smooth must be >= 0")
        if options["gamma"] <= 0:
            raise bad(f"gamma must be > 0, got {options['gamma']}")
    if name == "regional" and (options["sharpness"] < 0 or options["kl"] < 0):
        raise bad(f"sharpness and kl must be >= 0, got {options['sharpness']} and {options['kl']}")
    if name == "focal" and options["gamma"] < 0:
        raise bad(f"gamma must be >= 0, got {options['gamma']}")


def loss_options(name: str, **kwargs: PosWeight) -> dict[str, PosWeight]:
    """Every option of the loss called ``name``, the defaults filled in and all checked.

    What a run should record (config.json): the loss it trained with, not only the options given.
    """
    if name not in _OPTIONS:
        raise ConfigError(f"unknown loss '{name}'; valid names: {', '.join(LOSS_NAMES)}")
    allowed = _OPTIONS[name]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        valid = ", ".join(allowed) if allowed else "none"
        raise ConfigError(
            f"loss '{name}' has no option {', '.join(unknown)}; valid options: {valid}"
        )
    options = {**allowed, **kwargs}
    _check_options(name, options)
    return options


def build_loss(name: str, **kwargs: PosWeight) -> LossFn:
    """The loss called ``name`` (see :data:`LOSS_NAMES`) as a ``loss_fn(logits, batch)``.

    Options not given take the defaults of :data:`_OPTIONS` (see :func:`loss_options`); for
    ``bce-ftl`` (the binary task's loss) that includes ``pos_weight`` = :data:`LINE_POS_WEIGHT`.
    """
    options = loss_options(name, **kwargs)
    if name == "regional":
        return _regional(float(options["sharpness"]), float(options["kl"]))
    functions: dict[str, Callable[..., Tensor]] = {
        "pixel-mse": pixel_mse,
        "pixel-ce": pixel_bce,
        "bce-ftl": bce_ftl,
        "focal": focal_loss,
        "ce": cross_entropy,
    }
    return _pixel_loss(functions[name], name, **options)
