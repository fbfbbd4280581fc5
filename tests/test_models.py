"""Tests for icetools.models: shapes, the registry contract, UNet++ heads, FCtL and the refiner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from icetools.errors import ConfigError, DataError, InputFileError
from icetools.models import MODEL_NAMES, build_model, model_class, model_spec
from icetools.models.base import IcetoolsModel
from icetools.tasks import REFINER_MODEL
from icetools.models.blocks import ASPP, AttentionGate, PyramidPooling
from icetools.models.fctl import ContextCorrelation

IN_CHANNELS = 2

# Tiny widths so every architecture runs in milliseconds.
SMALL_ARGS: dict[str, dict] = {
    "unet": {"widths": [2, 4, 4, 8]},
    "unet-aspp": {"encoder_widths": [2, 2, 4, 4], "decoder_widths": [4, 2, 2, 2], "bottleneck_width": 4},
    "attention-unet": {"encoder_widths": [2, 2, 4, 4], "decoder_widths": [4, 2, 2, 2], "bottleneck_width": 4},
    "unet++": {"widths": [2, 2, 4, 4, 8]},
    "deeplabv3": {"base_width": 2},
    "pspnet": {"base_width": 2},
    "linknet": {"base_width": 4},
    "fctl": {"width": 1 / 32, "context_scales": [1.0, 2.0, 3.0]},
    "refiner": {"widths": [2, 4, 8]},
}


def small_model(name: str, *, out_channels: int = 1, **extra: object) -> torch.nn.Module:
    torch.manual_seed(0)
    # The refiner's channels are its out_channels crude probability bands, then image channels.
    in_channels = max(IN_CHANNELS, out_channels) if name == "refiner" else IN_CHANNELS
    return build_model(name, in_channels=in_channels, out_channels=out_channels, **{**SMALL_ARGS[name], **extra})


def sample_input(model: torch.nn.Module, *, batch: int, height: int, width: int) -> torch.Tensor:
    """(B, C, H, W) for plain models, (B, T, C, H, W) for context models."""
    torch.manual_seed(1)
    if model.takes_windows:
        return torch.randn(batch, len(model.context_scales), model.spec["args"]["in_channels"], height, width)
    return torch.randn(batch, IN_CHANNELS, height, width)


def test_every_registered_model_has_small_test_arguments() -> None:
    assert set(SMALL_ARGS) == set(MODEL_NAMES)


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("out_channels", [1, 5])
@pytest.mark.parametrize("size", [(32, 32), (48, 64)])
def test_output_is_logits_at_input_resolution(name: str, out_channels: int, size: tuple[int, int]) -> None:
    model = small_model(name, out_channels=out_channels).eval()
    x = sample_input(model, batch=2, height=size[0], width=size[1])
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, out_channels, *size)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_spec_is_plain_json_and_rebuilds_the_same_architecture(name: str) -> None:
    model = small_model(name)
    spec = model_spec(model)
    assert spec["name"] == name
    assert model_class(name).model_name == name
    assert json.loads(json.dumps(spec)) == spec
    assert spec["args"]["in_channels"] == IN_CHANNELS
    rebuilt = build_model(**spec)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    assert model_spec(rebuilt) == spec


@pytest.mark.parametrize("name", ["unet-aspp", "pspnet", "fctl"])
def test_pooling_branches_train_with_a_single_patch_batch(name: str) -> None:
    # Image pooling / bin-1 branches hold one value per channel: BatchNorm there would refuse batch 1.
    model = small_model(name).train()
    y = model(sample_input(model, batch=1, height=64, width=64))
    y.mean().backward()


def test_unknown_model_name_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="unknown model 'segformer'") as info:
        build_model("segformer", in_channels=2)
    for name in MODEL_NAMES:
        assert name in str(info.value)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ({"in_channels": "2"}, "'in_channels' must be an integer"),
        ({"in_channels": True}, "'in_channels' must be an integer"),
        ({"in_channels": 2, "widths": [8, 16, 32]}, "'widths' must be a list of 4 integers"),
        ({"in_channels": 2, "widths": "16,32,64,128"}, "'widths' must be a list of 4 integers"),
        ({"in_channels": 2, "out_channels": 0}, "'out_channels' must be an integer >= 1"),
        ({"in_channels": 2, "depth": 5}, "has no argument 'depth'"),
        ({}, "needs argument 'in_channels'"),
    ],
)
def test_bad_arguments_give_one_line_config_errors(args: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment) as info:
        build_model("unet", **args)
    assert "\n" not in str(info.value)


def test_lists_from_json_become_tuples_in_the_spec() -> None:
    model = build_model("unet", in_channels=3, widths=[2, 4, 4, 8])
    assert model.spec["args"]["widths"] == (2, 4, 4, 8)
    assert model_spec(model)["args"] == {"in_channels": 3, "out_channels": 1, "widths": [2, 4, 4, 8]}


def test_plain_and_context_models_declare_their_windows() -> None:
    assert small_model("unet").context_scales == (1.0,)
    assert small_model("fctl", context_scales=[1, 2.5]).context_scales == (1.0, 2.5)
    assert small_model("refiner").context_scales == (1.0, 2.0)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_registered_model_keeps_the_icetools_model_contract(name: str) -> None:
    cls = model_class(name)
    assert issubclass(cls, IcetoolsModel) and cls.model_name == name
    assert cls.takes_windows == (name in ("fctl", "refiner"))
    assert cls.can_deep_supervise == (name == "unet++")
    model = small_model(name)
    assert isinstance(model, IcetoolsModel)
    assert model.spec["name"] == name and model_spec(model)["name"] == name
    assert model.n_heads == (4 if name == "unet++" else 1)  # unet++ is deeply supervised by default
    assert model.takes_windows == (len(model.context_scales) > 1)
    with torch.no_grad():
        heads = model.eval().forward_heads(sample_input(model, batch=1, height=32, width=32))
    assert len(heads) == model.n_heads


def test_deep_supervision_off_leaves_one_head() -> None:
    model = small_model("unet++", deep_supervision=False)
    assert model.n_heads == 1 and type(model).can_deep_supervise


def test_the_refiner_is_registered_under_the_task_tables_name() -> None:
    assert REFINER_MODEL in MODEL_NAMES and model_class(REFINER_MODEL).takes_windows


def test_model_spec_of_a_foreign_module_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="build_model"):
        model_spec(torch.nn.Conv2d(1, 1, 1))


# ----------------------------------------------------------------------------------------- blocks


def test_attention_gate_weights_lie_in_0_1_at_skip_resolution() -> None:
    torch.manual_seed(0)
    gate = AttentionGate(skip_channels=4, gate_channels=6, inter_channels=2)
    skip, coarse = torch.randn(2, 4, 16, 16), torch.randn(2, 6, 8, 8)
    weights = gate.attention(skip, coarse)
    assert weights.shape == (2, 1, 16, 16)
    assert (weights > 0).all() and (weights < 1).all()
    assert gate(skip, coarse).shape == skip.shape


def test_aspp_and_pyramid_pooling_shapes() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 8, 6, 10)
    assert ASPP(8, 5, dilations=(1, 2, 3)).eval()(x).shape == (2, 5, 6, 10)
    pyramid = PyramidPooling(8, bins=(1, 2, 3, 6))
    assert pyramid(x).shape == (2, pyramid.out_channels, 6, 10)
    assert pyramid.out_channels == 8 + 4 * 2


# ----------------------------------------------------------------------------------------- UNet++


def test_unetpp_heads_and_forward_is_the_last_head() -> None:
    model = small_model("unet++", out_channels=3).eval()
    assert model.n_heads == 4
    x = sample_input(model, batch=2, height=32, width=48)
    with torch.no_grad():
        heads = model.forward_heads(x)
        out = model(x)
    assert len(heads) == 4
    assert all(h.shape == (2, 3, 32, 48) for h in heads)
    assert torch.equal(out, heads[-1])
    assert not torch.equal(heads[0], heads[-1])


def test_unetpp_pruned_inference_head_matches_its_deep_supervision_output() -> None:
    full = small_model("unet++").eval()
    pruned = small_model("unet++", inference_head=1).eval()
    pruned.load_state_dict(full.state_dict())
    x = sample_input(full, batch=1, height=32, width=32)
    with torch.no_grad():
        assert torch.allclose(pruned(x), full.forward_heads(x)[1], atol=1e-6)


def test_unetpp_without_deep_supervision_has_one_head() -> None:
    model = small_model("unet++", deep_supervision=False).eval()
    assert model.n_heads == 1
    x = sample_input(model, batch=1, height=32, width=32)
    with torch.no_grad():
        heads = model.forward_heads(x)
        assert len(heads) == 1 and torch.equal(heads[0], model(x))
    with pytest.raises(ConfigError, match="inference_head"):
        small_model("unet++", deep_supervision=False, inference_head=2)


# ------------------------------------------------------------------------------------------- FCtL


def test_context_correlation_keeps_local_shape_and_rows_sum_to_one() -> None:
    torch.manual_seed(0)
    module = ContextCorrelation(8)
    local, context = torch.randn(2, 8, 3, 5), torch.randn(2, 8, 4, 4)
    out = module(local, context)
    assert out.shape == local.shape
    relevance = module.relevance(local, context)
    assert relevance.shape == (2, 15, 16)
    assert torch.allclose(relevance.sum(-1), torch.ones(2, 15))
    # forward is R applied to V(context): the explicit product gives the same answer.
    value = module.value(context).flatten(2)
    assert torch.allclose(out, torch.bmm(value, relevance.transpose(1, 2)).reshape(local.shape), atol=1e-5)


def test_context_correlation_known_answers() -> None:
    torch.manual_seed(0)
    module = ContextCorrelation(4)
    local = torch.randn(1, 4, 3, 3)
    # A spatially constant context: every position gets V(that vector), whatever the local features.
    vector = torch.randn(1, 4, 1, 1)
    out = module(local, vector.expand(1, 4, 5, 5))
    expected = module.value(vector).expand(1, 4, 3, 3)
    assert torch.allclose(out, expected, atol=1e-6)
    # Attention over context positions ignores their order.
    context = torch.randn(1, 4, 5, 5)
    assert torch.allclose(module(local, context), module(local, context.flip(-1, -2)), atol=1e-6)


def test_fctl_fusion_weights_are_a_distribution_over_scales() -> None:
    model = small_model("fctl").eval()
    x = sample_input(model, batch=2, height=64, width=64)
    with torch.no_grad():
        logits, weights = model(x, return_fusion_weights=True)
    assert logits.shape == (2, 1, 64, 64)
    assert weights.shape == (2, 3, 2, 2)  # pool5 of a 64-pixel patch
    assert (weights >= 0).all()
    assert torch.allclose(weights.sum(dim=1), torch.ones(2, 2, 2))
    with torch.no_grad():
        assert torch.equal(model(x), logits)


def test_fctl_output_depends_on_the_context_windows() -> None:
    # Train mode: at random init the eval-mode BatchNorm statistics shrink a 13-conv VGG's
    # activations to ~1e-5, too small to show the effect of any input.
    model = small_model("fctl").train()
    x = sample_input(model, batch=2, height=32, width=32)
    changed = x.clone()
    changed[:, 2] = torch.randn_like(changed[:, 2])
    with torch.no_grad():
        assert not torch.allclose(model(x), model(changed))
        assert torch.allclose(model(x), model(x))


def test_fctl_with_only_the_local_patch() -> None:
    model = small_model("fctl", context_scales=[1.0]).eval()
    x = sample_input(model, batch=2, height=32, width=48)
    with torch.no_grad():
        logits, weights = model(x, return_fusion_weights=True)
    assert logits.shape == (2, 1, 32, 48)
    assert torch.allclose(weights, torch.ones_like(weights))


def test_fctl_gradients_reach_the_encoder_from_every_window() -> None:
    model = small_model("fctl").train()
    x = sample_input(model, batch=2, height=32, width=32).requires_grad_(True)
    model(x).square().mean().backward()
    for t in range(x.shape[1]):
        assert x.grad[:, t].abs().sum() > 0, f"no gradient from window {t}"
    first_conv = model.encoder.stages[0][0][0].weight
    assert first_conv.grad is not None and first_conv.grad.abs().sum() > 0


def test_fctl_rejects_bad_scales_and_wrong_window_count() -> None:
    with pytest.raises(ConfigError, match="start with 1.0"):
        small_model("fctl", context_scales=[2.0, 1.0])
    model = small_model("fctl").eval()
    with pytest.raises(DataError, match="3 windows"):
        model(torch.randn(1, 2, IN_CHANNELS, 32, 32))


def test_fctl_loads_a_local_encoder_weights_file(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    source = small_model("fctl")
    with torch.no_grad():
        for p in source.encoder.parameters():
            p.add_(1.0)
    path = tmp_path / "vgg.safetensors"
    save_file({f"encoder.{k}": v.contiguous() for k, v in source.encoder.state_dict().items()}, str(path))
    model = small_model("fctl", encoder_weights=str(path))
    for key, value in source.encoder.state_dict().items():
        assert torch.equal(model.encoder.state_dict()[key], value)
    assert model.spec["args"]["encoder_weights"] == str(path)
    with pytest.raises(InputFileError, match="nothere.safetensors"):
        small_model("fctl", encoder_weights=str(tmp_path / "nothere.safetensors"))
    with pytest.raises(ConfigError, match="do not fit"):
        small_model("fctl", width=1 / 16, encoder_weights=str(path))


# ---------------------------------------------------------------------------------------- refiner


def test_refiner_reads_both_masks() -> None:
    model = small_model("refiner", out_channels=2).eval()
    torch.nn.init.normal_(model.head.weight)  # a trained correction: at init the refiner is the identity
    x = sample_input(model, batch=1, height=32, width=32)
    changed = x.clone()
    changed[:, 1] = torch.rand_like(changed[:, 1])
    with torch.no_grad():
        assert model(x).shape == (1, 2, 32, 32)
        assert not torch.allclose(model(x), model(changed))
    with pytest.raises(DataError, match="2 masks"):
        model(torch.randn(1, IN_CHANNELS, 32, 32))
    with pytest.raises(ConfigError, match="context_scales"):
        small_model("refiner", context_scales=[1.0, 2.0, 3.0])
