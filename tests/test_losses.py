"""Tests for icetools.losses: reference loops, hand-computed values and gradient checks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from icetools.errors import ConfigError
from icetools.losses import (
    AUTO_POS_WEIGHT_MAX,
    LINE_POS_WEIGHT,
    LOSS_NAMES,
    REGIONAL_SHARPNESS,
    TASK_LOSSES,
    bce_ftl,
    build_loss,
    cross_entropy,
    deep_supervision,
    focal_loss,
    focal_tversky,
    loss_options,
    pixel_bce,
    pixel_mse,
    positive_weight,
    regional_loss,
)


def reference_regional_loss(
    logits: torch.Tensor, groups: torch.Tensor, group_targets: torch.Tensor
) -> torch.Tensor:
    """The slow, obvious version: loop over the batch and the unique polygon ids."""
    probabilities = torch.sigmoid(logits[:, 0])
    pixels: dict[int, list[torch.Tensor]] = {}
    for b in range(groups.shape[0]):
        for group in torch.unique(groups[b]).tolist():
            if group == 0:
                continue
            mask = groups[b] == group
            pixels.setdefault(group, []).append(probabilities[b][mask])
    errors = []
    for group, chunks in sorted(pixels.items()):
        mean = torch.cat(chunks).mean()
        errors.append((mean - group_targets[group]) ** 2)
    return torch.stack(errors).mean()


def random_polygon_batch(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    batch, height, width, n_groups = 3, 9, 7, 12
    logits = torch.randn(batch, 1, height, width, generator=generator, dtype=torch.float64)
    groups = torch.randint(1, 9, (batch, height, width), generator=generator)
    groups[:, :2, :] = 0  # land / nodata rows: ignored
    groups[0, 2:4, :] = 10  # group 10 spans two patches of the batch...
    groups[2, 5:, 3:] = 10  # ...patches 0 and 2
    # groups 9, 11 and 12 never occur: they must carry no weight
    group_targets = torch.rand(n_groups + 1, generator=generator, dtype=torch.float64)
    group_targets[0] = 123.0  # slot 0 is unused and must not matter
    return logits.requires_grad_(True), groups, group_targets


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_regional_loss_equals_reference_loop_value_and_gradient(seed: int) -> None:
    logits, groups, group_targets = random_polygon_batch(seed)
    fast = regional_loss(logits, groups, group_targets)
    slow = reference_regional_loss(logits, groups, group_targets)
    assert fast.item() == pytest.approx(slow.item(), abs=1e-6)
    (grad_fast,) = torch.autograd.grad(fast, logits)
    (grad_slow,) = torch.autograd.grad(slow, logits)
    assert torch.allclose(grad_fast, grad_slow, atol=1e-6)
    assert grad_fast[:, :, :2, :].abs().max().item() == 0.0  # ignored pixels get no gradient


def test_regional_loss_accepts_three_dimensional_logits() -> None:
    logits, groups, group_targets = random_polygon_batch(3)
    assert regional_loss(logits[:, 0], groups, group_targets).item() == pytest.approx(
        reference_regional_loss(logits, groups, group_targets).item(), abs=1e-6
    )


def test_regional_loss_hand_value() -> None:
    # group 1: sigmoid(0)=0.5 and sigmoid(0)=0.5 -> mean 0.5 vs 0.2 -> 0.09
    # group 2: one pixel sigmoid(0)=0.5 vs 1.0 -> 0.25 ; mean of the two = 0.17
    logits = torch.zeros(1, 1, 2, 2)
    groups = torch.tensor([[[1, 1], [2, 0]]])
    targets = torch.tensor([0.0, 0.2, 1.0, 0.7])  # group 3 is empty
    assert regional_loss(logits, groups, targets).item() == pytest.approx(0.17, abs=1e-6)


def test_regional_loss_all_groups_empty_is_zero_with_finite_gradient() -> None:
    logits = torch.randn(2, 1, 4, 4, requires_grad=True)
    groups = torch.zeros(2, 4, 4, dtype=torch.int64)
    loss = regional_loss(logits, groups, torch.rand(6))
    assert loss.item() == 0.0
    (grad,) = torch.autograd.grad(loss, logits)
    assert torch.isfinite(grad).all() and grad.abs().max().item() == 0.0


def test_regional_loss_skips_groups_without_a_finite_target() -> None:
    logits = torch.zeros(1, 1, 1, 2, requires_grad=True)
    groups = torch.tensor([[[1, 2]]])
    targets = torch.tensor([0.0, 1.0, float("nan")])
    loss = regional_loss(logits, groups, targets)
    assert loss.item() == pytest.approx(0.25)
    (grad,) = torch.autograd.grad(loss, logits)
    assert torch.isfinite(grad).all()


def test_regional_loss_runs_on_meta_device_so_it_never_syncs_with_the_host() -> None:
    # .item(), .nonzero(), boolean-mask indexing and torch.unique all fail on "meta" tensors
    # because their result depends on the data: running there proves the loss uses none of them.
    logits = torch.randn(2, 1, 8, 8, device="meta", requires_grad=True)
    groups = torch.zeros(2, 8, 8, dtype=torch.int64, device="meta")
    loss = regional_loss(logits, groups, torch.rand(5, device="meta"))
    loss.backward()
    assert loss.shape == () and logits.grad is not None and logits.grad.shape == logits.shape


def test_pixel_losses_average_over_valid_pixels_only() -> None:
    logits = torch.tensor([[[[0.0, 0.0], [2.0, 100.0]]]])
    target = torch.tensor([[[1.0, 0.5], [float("nan"), float("nan")]]])
    valid = torch.tensor([[[True, True], [False, False]]])
    # sigmoid(0) = 0.5: errors 0.25 and 0 -> 0.125
    assert pixel_mse(logits, target, valid).item() == pytest.approx(0.125)
    # BCE(0, 1) = ln 2 ; BCE(0, 0.5) = ln 2 as well
    assert pixel_bce(logits, target, valid).item() == pytest.approx(math.log(2))


def test_pixel_losses_with_no_valid_pixel_are_zero_and_keep_the_graph() -> None:
    logits = torch.randn(1, 1, 3, 3, requires_grad=True)
    target = torch.full((1, 3, 3), float("nan"))
    valid = torch.zeros(1, 3, 3, dtype=torch.bool)
    for loss_fn in (pixel_mse, pixel_bce, bce_ftl, focal_loss):
        loss = loss_fn(logits, target, valid)
        assert loss.item() == 0.0
        (grad,) = torch.autograd.grad(loss, logits)
        assert torch.isfinite(grad).all()


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_bce_ftl_hand_computed_on_two_by_two() -> None:
    probabilities = [[0.8, 0.4], [0.1, 0.6]]
    logits = torch.tensor(
        [[[[logit(p) for p in row] for row in probabilities]]], dtype=torch.float64
    )
    target = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]], dtype=torch.float64)
    # TP = 0.8 + 0.4 = 1.2 ; FN = 0.2 + 0.6 = 0.8 ; FP = 0.1 + 0.6 = 0.7
    tversky = (1.2 + 1) / (1.2 + 0.7 * 0.8 + 0.3 * 0.7 + 1)  # 2.2 / 2.97
    ftl = (1 - tversky) ** (3 / 4)
    bce = -(math.log(0.8) + math.log(0.4) + math.log(0.9) + math.log(0.4)) / 4
    expected = 0.25 * bce + 0.75 * ftl
    assert bce_ftl(logits, target, None).item() == pytest.approx(expected, abs=1e-9)


def test_bce_ftl_ignores_invalid_pixels() -> None:
    logits = torch.tensor([[[[logit(0.8), logit(0.3)]]]], dtype=torch.float64)
    target = torch.tensor([[[1.0, float("nan")]]], dtype=torch.float64)
    valid = torch.tensor([[[True, False]]])
    tversky = (0.8 + 1) / (0.8 + 0.7 * 0.2 + 1)
    expected = 0.25 * -math.log(0.8) + 0.75 * (1 - tversky) ** 0.75
    assert bce_ftl(logits, target, valid).item() == pytest.approx(expected, abs=1e-9)


def test_focal_tversky_is_zero_for_a_perfect_prediction() -> None:
    target = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    logits = (target * 2 - 1).unsqueeze(1) * 40.0  # sigmoid saturates to exactly 0 / 1 in float32
    loss = focal_tversky(logits.requires_grad_(True), target)
    assert loss.item() == 0.0
    (grad,) = torch.autograd.grad(loss, logits)
    assert torch.isfinite(grad).all()


def test_focal_tversky_alpha_weights_false_negatives() -> None:
    # Only false negatives: the truth is foreground, the prediction says background.
    logits = torch.full((1, 1, 2, 2), -2.0)
    target = torch.ones(1, 2, 2)
    base = bce_ftl(logits, target, None, alpha=0.5, beta=0.5).item()
    assert bce_ftl(logits, target, None, alpha=0.9, beta=0.5).item() > base
    higher_beta = bce_ftl(logits, target, None, alpha=0.5, beta=0.9).item()
    assert higher_beta == pytest.approx(base, rel=1e-7)


def test_focal_with_gamma_zero_is_bce() -> None:
    generator = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 1, 5, 5, generator=generator)
    target = torch.rand(2, 5, 5, generator=generator).round()
    valid = torch.rand(2, 5, 5, generator=generator) > 0.3
    expected = F.binary_cross_entropy_with_logits(logits[:, 0][valid], target[valid])
    focal = focal_loss(logits, target, valid, gamma=0.0)
    assert focal.item() == pytest.approx(expected.item(), abs=1e-6)


def test_focal_with_gamma_zero_is_cross_entropy_and_down_weights_easy_pixels() -> None:
    generator = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 4, 5, 5, generator=generator)
    target = torch.randint(0, 4, (2, 5, 5), generator=generator)
    valid = torch.rand(2, 5, 5, generator=generator) > 0.3
    target[~valid] = 255  # nodata class code at invalid pixels must be harmless
    expected = F.cross_entropy(logits.permute(0, 2, 3, 1)[valid], target[valid])
    focal = focal_loss(logits, target, valid, gamma=0.0)
    assert focal.item() == pytest.approx(expected.item(), abs=1e-6)
    assert cross_entropy(logits, target, valid).item() == pytest.approx(expected.item(), abs=1e-6)
    assert focal_loss(logits, target, valid, gamma=2.0).item() < expected.item()


def test_binary_focal_hand_value() -> None:
    # p = 0.8 for a foreground pixel: (1 - 0.8)**2 * -ln 0.8
    logits = torch.tensor([[[[logit(0.8)]]]], dtype=torch.float64)
    target = torch.ones(1, 1, 1, dtype=torch.float64)
    assert focal_loss(logits, target, None, gamma=2.0).item() == pytest.approx(
        0.04 * -math.log(0.8), abs=1e-9
    )


def test_deep_supervision_weights_hand_values() -> None:
    def mean_logit(logits: torch.Tensor, batch: dict) -> torch.Tensor:
        return logits.mean()

    heads = [torch.full((1, 1, 2, 2), value) for value in (1.0, 2.0, 3.0, 4.0)]
    batch = {"valid": torch.ones(1, 2, 2, dtype=torch.bool)}
    # (0.1*1 + 0.2*2 + 0.3*3 + 0.4*4) / 1.0 = 3.0
    assert deep_supervision(mean_logit)(heads, batch).item() == pytest.approx(3.0)
    # (1*1 + 3*2) / 4 = 1.75
    two = deep_supervision(mean_logit, (1.0, 3.0))
    assert two(heads[:2], batch).item() == pytest.approx(1.75)
    assert two(heads[3], batch).item() == pytest.approx(4.0)  # a lone tensor: final head only
    with pytest.raises(ConfigError, match="2 deep supervision"):
        two(heads, batch)


def test_deep_supervision_upsamples_coarse_heads_to_the_target() -> None:
    loss_fn = deep_supervision(build_loss("pixel-mse"), (1.0, 1.0))
    batch = {"target": torch.full((1, 4, 4), 0.5), "valid": torch.ones(1, 4, 4, dtype=torch.bool)}
    heads = [torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 4, 4)]
    assert loss_fn(heads, batch).item() == pytest.approx(0.0)


def test_build_loss_reads_its_inputs_from_the_batch() -> None:
    logits, groups, group_targets = random_polygon_batch(7)
    batch = {"groups": groups, "group_targets": group_targets, "valid": groups >= 0}
    assert build_loss("regional", sharpness=0)(logits, batch).item() == pytest.approx(
        reference_regional_loss(logits, groups, group_targets).item(), abs=1e-6
    )
    target = torch.rand(3, 9, 7, dtype=torch.float64)
    batch = {"target": target, "valid": groups > 0}
    assert build_loss("pixel-ce")(logits, batch).item() == pytest.approx(
        pixel_bce(logits, target, groups > 0).item()
    )
    assert build_loss("bce-ftl", lam=1.0, pos_weight=1.0)(logits, batch).item() == pytest.approx(
        pixel_bce(logits, target, groups > 0).item()
    )


def test_regional_sharpness_adds_the_mean_of_4p1mp_over_charted_pixels_only() -> None:
    logits, groups, group_targets = random_polygon_batch(3)
    batch = {"groups": groups, "group_targets": group_targets, "valid": torch.ones_like(groups, dtype=torch.bool)}
    p = torch.sigmoid(logits[:, 0]).detach()
    charted = groups > 0  # land and unlabelled pixels (group 0) are not asked to decide
    expected_penalty = sum(4 * v * (1 - v) for v in p[charted].tolist()) / int(charted.sum())
    plain = reference_regional_loss(logits, groups, group_targets).item()
    assert build_loss("regional", sharpness=0.3)(logits, batch).item() == pytest.approx(plain + 0.3 * expected_penalty)
    assert build_loss("regional", sharpness=0)(logits, batch).item() == pytest.approx(plain)  # the paper's loss
    default = build_loss("regional")(logits, batch).item()
    assert default == pytest.approx(plain + REGIONAL_SHARPNESS * expected_penalty)
    decided = torch.where(torch.rand(logits.shape, generator=torch.Generator().manual_seed(0)) > 0.5, 30.0, -30.0)
    with_term = build_loss("regional", sharpness=1.0)(decided.double(), batch).item()
    assert with_term == pytest.approx(reference_regional_loss(decided.double(), groups, group_targets).item(), abs=1e-9)


@pytest.mark.parametrize("seed", [0, 4])
def test_regional_kl_adds_each_polygons_kl_divergence_to_its_squared_error(seed: int) -> None:
    logits, groups, group_targets = random_polygon_batch(seed)
    group_targets[3], group_targets[5] = 0.0, 1.0  # open water and 10/10: the log terms at their ends
    probabilities = torch.sigmoid(logits[:, 0]).detach()
    errors = []
    for group in sorted(set(groups.unique().tolist()) - {0}):
        m, t = probabilities[groups == group].mean().item(), group_targets[group].item()
        kl = sum(a * math.log(a / b) for a, b in ((t, m), (1 - t, 1 - m)) if a > 0)
        errors.append((m - t) ** 2 + 0.25 * kl)
    batch = {"groups": groups, "group_targets": group_targets}
    value = build_loss("regional", sharpness=0, kl=0.25)(logits, batch)
    assert value.item() == pytest.approx(sum(errors) / len(errors), rel=1e-9)
    value.backward()
    assert torch.isfinite(logits.grad).all()


def test_build_loss_names_and_task_table_agree() -> None:
    for names in TASK_LOSSES.values():
        for name in names:
            assert name in LOSS_NAMES
            build_loss(name)


def test_build_loss_errors_list_what_is_valid() -> None:
    with pytest.raises(ConfigError, match="valid names: regional, pixel-mse"):
        build_loss("dice")
    with pytest.raises(ConfigError, match="valid options: gamma"):
        build_loss("focal", alpha=0.5)
    with pytest.raises(ConfigError, match="valid options: sharpness, kl"):
        build_loss("regional", gamma=1.0)
    with pytest.raises(ConfigError, match="sharpness and kl must be >= 0"):
        build_loss("regional", sharpness=-0.1)
    with pytest.raises(ConfigError, match="sharpness and kl must be >= 0"):
        build_loss("regional", kl=-1)
    with pytest.raises(ConfigError, match="lam"):
        build_loss("bce-ftl", lam=1.5)
    with pytest.raises(ConfigError, match="needs 'groups'"):
        build_loss("regional")(torch.zeros(1, 1, 2, 2), {"target": torch.zeros(1, 2, 2)})
    with pytest.raises(ConfigError, match="one output channel"):
        pixel_mse(torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 2), None)


# --------------------------------------------------------------------------- positive weighting


def rare_line_batch(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits, a ~3 % foreground target and a valid mask with land (NaN targets) on it."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 1, 12, 10, generator=generator, dtype=torch.float64) * 2
    target = (torch.rand(3, 12, 10, generator=generator) < 0.03).to(torch.float64)
    target[0, 5, 2:6] = 1.0  # at least a few line pixels
    valid = torch.rand(3, 12, 10, generator=generator) > 0.25
    valid[0, 5, 2:6] = True
    target[~valid] = float("nan")
    return logits.requires_grad_(True), target, valid


def reference_weighted_bce(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, weight: float) -> torch.Tensor:
    """The obvious per-pixel loop: -(w y log p + (1 - y) log(1 - p)), mean over valid pixels."""
    terms = []
    for index in valid.nonzero().tolist():
        b, r, c = index
        p = torch.sigmoid(logits[b, 0, r, c])
        y = target[b, r, c]
        terms.append(-(weight * y * torch.log(p) + (1 - y) * torch.log(1 - p)))
    return torch.stack(terms).mean()


def auto_weight_by_hand(target: torch.Tensor, valid: torch.Tensor) -> float:
    positives = sum(1 for y, ok in zip(target.flatten().tolist(), valid.flatten().tolist()) if ok and y == 1)
    negatives = int(valid.sum()) - positives
    return min(max(negatives / max(positives, 1), 1.0), AUTO_POS_WEIGHT_MAX)


@pytest.mark.parametrize("seed", [0, 1])
def test_weighted_bce_equals_the_plain_references_for_a_number_and_auto(seed: int) -> None:
    logits, target, valid = rare_line_batch(seed)
    weight = auto_weight_by_hand(target, valid)
    assert 5 < weight < AUTO_POS_WEIGHT_MAX  # a real up-weighting, not the clip
    for pos_weight, expected_weight in ((7.5, 7.5), ("auto", weight)):
        loss = pixel_bce(logits, target, valid, pos_weight=pos_weight)
        loop = reference_weighted_bce(logits, target, valid, expected_weight)
        torch_reference = F.binary_cross_entropy_with_logits(
            logits[:, 0][valid], target[valid], pos_weight=torch.tensor(expected_weight, dtype=torch.float64)
        )
        assert loss.item() == pytest.approx(loop.item(), rel=1e-9)
        assert loss.item() == pytest.approx(torch_reference.item(), rel=1e-9)
        (grad,) = torch.autograd.grad(loss, logits)
        (grad_loop,) = torch.autograd.grad(loop, logits)
        assert torch.isfinite(grad).all() and torch.allclose(grad, grad_loop, atol=1e-12)
        assert grad[:, 0][~valid].abs().max().item() == 0.0  # land gets no gradient
    assert pixel_bce(logits, target, valid, pos_weight=1.0).item() == pytest.approx(
        reference_weighted_bce(logits, target, valid, 1.0).item(), rel=1e-9
    )


def test_bce_ftl_and_binary_focal_weight_only_their_bce_term() -> None:
    logits, target, valid = rare_line_batch(2)
    weight = auto_weight_by_hand(target, valid)
    bce = reference_weighted_bce(logits, target, valid, weight).item()
    ftl = focal_tversky(logits, target, valid).item()
    for loss_fn in (build_loss("bce-ftl", pos_weight="auto"), build_loss("bce-ftl")):  # the default
        loss = loss_fn(logits, {"target": target, "valid": valid})
        assert loss.item() == pytest.approx(0.25 * bce + 0.75 * ftl, rel=1e-9)
        (grad,) = torch.autograd.grad(loss, logits)
        assert torch.isfinite(grad).all()
    assert LINE_POS_WEIGHT == "auto"  # the binary task's default; change both together
    assert loss_options("bce-ftl")["pos_weight"] == LINE_POS_WEIGHT
    assert loss_options("focal")["pos_weight"] == 1.0 and loss_options("pixel-ce", pos_weight=4)["pos_weight"] == 4
    focal = build_loss("focal", gamma=0.0, pos_weight=3.0)(logits, {"target": target, "valid": valid})
    assert focal.item() == pytest.approx(reference_weighted_bce(logits, target, valid, 3.0).item(), rel=1e-9)
    assert build_loss("pixel-ce", pos_weight=3.0)(logits, {"target": target, "valid": valid}).item() == (
        pytest.approx(focal.item(), rel=1e-9)
    )


def test_auto_weight_on_an_all_background_batch_divides_by_nothing() -> None:
    logits = torch.randn(2, 1, 6, 6, dtype=torch.float64, requires_grad=True)
    target = torch.zeros(2, 6, 6, dtype=torch.float64)
    valid = torch.ones(2, 6, 6, dtype=torch.bool)
    assert positive_weight(target, valid, "auto").item() == AUTO_POS_WEIGHT_MAX  # clipped, finite
    for loss_fn in (pixel_bce, bce_ftl, focal_loss):
        loss = loss_fn(logits, target, valid, pos_weight="auto")
        assert math.isfinite(loss.item())
        (grad,) = torch.autograd.grad(loss, logits)
        assert torch.isfinite(grad).all()
    # No positive: the weight multiplies zero, so the loss is the unweighted one.
    assert pixel_bce(logits, target, valid, pos_weight="auto").item() == pytest.approx(
        pixel_bce(logits, target, valid).item()
    )
    nothing_valid = torch.zeros(2, 6, 6, dtype=torch.bool)
    loss = bce_ftl(logits, torch.full_like(target, float("nan")), nothing_valid, pos_weight="auto")
    assert loss.item() == 0.0
    assert torch.isfinite(torch.autograd.grad(loss, logits)[0]).all()


def test_auto_weight_is_clipped_and_never_below_one() -> None:
    valid = torch.ones(1, 100, 100, dtype=torch.bool)
    one_line_pixel = torch.zeros(1, 100, 100)
    one_line_pixel[0, 50, 50] = 1.0
    assert positive_weight(one_line_pixel, valid, "auto").item() == AUTO_POS_WEIGHT_MAX
    assert positive_weight(one_line_pixel, valid, "auto", max_weight=20.0).item() == 20.0
    mostly_line = torch.ones(1, 100, 100)
    mostly_line[0, :10] = 0.0
    assert positive_weight(mostly_line, valid, "auto").item() == 1.0
    tenth = torch.zeros(1, 100, 100)
    tenth[0, :10] = 1.0
    valid_half = valid.clone()
    valid_half[0, 50:] = False  # only valid pixels count: 1000 positives, 4000 negatives
    assert positive_weight(tenth, valid_half, "auto").item() == pytest.approx(4.0)
    assert positive_weight(tenth, valid, 1.0) is None


def test_auto_weight_runs_on_meta_device_so_it_never_syncs_with_the_host() -> None:
    logits = torch.randn(2, 1, 8, 8, device="meta", requires_grad=True)
    target = torch.zeros(2, 8, 8, device="meta")
    valid = torch.ones(2, 8, 8, dtype=torch.bool, device="meta")
    loss = bce_ftl(logits, target, valid, pos_weight="auto")
    loss.backward()
    assert loss.shape == () and logits.grad is not None


def test_pos_weight_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="'auto'"):
        build_loss("bce-ftl", pos_weight="sometimes")
    with pytest.raises(ConfigError, match="> 0"):
        build_loss("pixel-ce", pos_weight=-2.0)
    with pytest.raises(ConfigError, match="pos_weight_max"):
        build_loss("focal", pos_weight_max=0.5)
    with pytest.raises(ConfigError, match="valid options: none"):
        build_loss("pixel-mse", pos_weight=2.0)
    multiclass = build_loss("focal", pos_weight=2.0)
    with pytest.raises(ConfigError, match="binary"):
        multiclass(torch.zeros(1, 3, 2, 2), {"target": torch.zeros(1, 2, 2, dtype=torch.int64)})
