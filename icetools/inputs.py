"""What a model reads: scene bands, each turned into model channels by a named transform.

A wrapped interferometric phase is circular: -pi and +pi are the same value, so fed raw its wrap
is a sharp edge the network must learn to ignore. The ``cos-sin`` transform feeds (cos, sin) of the
angle instead, which is continuous across the wrap; every other band enters as it is
(``identity``). Bands named like a phase (``phase``, ``*_phase``, e.g. ``interferometric_phase``,
any case) get ``cos-sin`` unless told otherwise.

config.json records the bands under ``"inputs"`` and the transforms under ``"input_transforms"``
(band -> transform); a config without transforms (made before they existed) means identity for every
band. The model's ``in_channels`` and the normalisation statistics count channels after the transform.

:func:`read_inputs` is the one place where bands become channels: the training datasets, the
normalisation statistics and predict's strip reader all call it, so training and prediction can not
feed a model different numbers for the same pixels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from rasterio.windows import Window

from icetools.errors import ConfigError
from icetools.io.scene import Scene, clamp_window, pad_array

if TYPE_CHECKING:
    from collections.abc import Callable

IDENTITY = "identity"
COS_SIN = "cos-sin"
TRANSFORMS: dict[str, tuple[str, ...]] = {IDENTITY: ("{}",), COS_SIN: ("cos({})", "sin({})")}
"""Transform name -> the channel names it makes from a band (``{}`` is the band name)."""


def is_phase_band(name: str) -> bool:
    """Whether a band name says it holds a wrapped phase (``phase``, ``*_phase``, any case)."""
    lowered = name.strip().lower()
    return lowered == "phase" or lowered.endswith("_phase")


def check_transform(name: object, *, band: str) -> str:
    """A known transform name, else a ConfigError listing the known ones."""
    if not isinstance(name, str) or name not in TRANSFORMS:
        raise ConfigError(
            f"unknown input transform {name!r} for band {band!r}; valid transforms: {', '.join(TRANSFORMS)}"
        )
    return name


@dataclass(frozen=True)
class InputSpec:
    """The bands a model reads, in order, and the transform of each (same length)."""

    bands: tuple[str, ...]
    transforms: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.bands) != len(self.transforms):
            raise ConfigError(f"{len(self.bands)} input bands but {len(self.transforms)} transforms")
        if len(set(self.bands)) != len(self.bands):
            raise ConfigError(f"input bands must be distinct, got {', '.join(self.bands)}")
        for band, transform in zip(self.bands, self.transforms):
            check_transform(transform, band=band)

    # --- building ---------------------------------------------------------------------------------

    @classmethod
    def identity(cls, bands: Sequence[str]) -> InputSpec:
        """Every band as it is: old configs, crude probability mosaics."""
        return cls(tuple(bands), (IDENTITY,) * len(bands))

    @classmethod
    def from_mapping(cls, bands: Sequence[str], transforms: Mapping[str, str] | None) -> InputSpec:
        """Bands with the transforms a config records; a band not named there enters as it is."""
        transforms = dict(transforms or {})
        unknown = [name for name in transforms if name not in bands]
        if unknown:
            raise ConfigError(
                f"input transforms name band(s) {', '.join(map(repr, unknown))} that are not inputs "
                f"({', '.join(bands)})"
            )
        return cls(tuple(bands), tuple(check_transform(transforms.get(b, IDENTITY), band=b) for b in bands))

    @classmethod
    def default(cls, bands: Sequence[str], overrides: Mapping[str, str] | None = None) -> InputSpec:
        """``cos-sin`` for bands named like a phase, identity for the rest; ``overrides`` win."""
        chosen = {band: COS_SIN for band in bands if is_phase_band(band)}
        chosen.update(overrides or {})
        return cls.from_mapping(bands, chosen)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> InputSpec | None:
        """The spec a config.json records (None when it names no inputs); ConfigError for a bad entry."""
        inputs = config.get("inputs")
        transforms = config.get("input_transforms")
        if transforms is not None and not (
            isinstance(transforms, Mapping) and all(isinstance(k, str) for k in transforms)
        ):
            raise ConfigError(f'config "input_transforms" must map band names to transforms, got {transforms!r}')
        if inputs is None:
            if transforms:
                raise ConfigError('config "input_transforms" needs "inputs", the bands they apply to')
            return None
        if not (isinstance(inputs, list) and inputs and all(isinstance(n, str) and n for n in inputs)):
            raise ConfigError(f'config "inputs" must be a list of band names, got {inputs!r}')
        return cls.from_mapping(inputs, transforms)

    # --- what it gives ------------------------------------------------------------------------------

    def record(self) -> dict[str, str]:
        """The ``input_transforms`` entry of config.json: every band and its transform."""
        return dict(zip(self.bands, self.transforms))

    @property
    def channel_names(self) -> tuple[str, ...]:
        """The model's channels, e.g. ``cos(phase), sin(phase), magnitude``."""
        return tuple(p.format(b) for b, t in zip(self.bands, self.transforms) for p in TRANSFORMS[t])

    @property
    def n_channels(self) -> int:
        return sum(len(TRANSFORMS[t]) for t in self.transforms)

    @property
    def is_identity(self) -> bool:
        return all(t == IDENTITY for t in self.transforms)

    def describe(self) -> str:
        """One line for messages: ``phase -> cos(phase), sin(phase); magnitude``."""
        parts = []
        for band, transform in zip(self.bands, self.transforms):
            names = [p.format(band) for p in TRANSFORMS[transform]]
            parts.append(band if transform == IDENTITY else f"{band} -> {', '.join(names)}")
        return "; ".join(parts)

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """(..., bands, h, w) band values -> (..., channels, h, w) float32; NaN stays NaN."""
        if raw.shape[-3] != len(self.bands):
            raise ValueError(f"expected {len(self.bands)} bands on axis -3, got shape {raw.shape}")
        if self.is_identity:
            return raw.astype("float32", copy=False)
        channels = []
        for i, transform in enumerate(self.transforms):
            band = raw[..., i, :, :]
            if transform == COS_SIN:
                channels += [np.cos(band), np.sin(band)]
            else:
                channels.append(band)
        return np.stack(channels, axis=-3).astype("float32", copy=False)


def as_input_spec(inputs: InputSpec | Sequence[str]) -> InputSpec:
    """An InputSpec as is; a plain list of band names as identity transforms."""
    return inputs if isinstance(inputs, InputSpec) else InputSpec.identity(list(inputs))


def has_own_validity(scene: Scene) -> bool:
    """Whether a scene has its own validity rule (AI4Arctic ready-to-train: all-zero SAR is land);
    for the others finite inputs are the rule, and a second read is spared."""
    return type(scene).valid_mask is not Scene.valid_mask


def read_inputs(
    scene: Scene, window: Window, spec: InputSpec, *, pad_mode: str = "constant"
) -> tuple[np.ndarray, np.ndarray]:
    """The model's channels (C, h, w) float32 (NaN where invalid) and the validity (h, w) of a window.

    Beyond the scene edge the channels are padded by ``pad_mode`` (``constant`` = NaN, ``reflect``,
    ``edge``) and the pixels are always invalid. The scene's own validity rule applies, and a pixel
    is valid only where every channel is finite.
    """
    inner, pad = clamp_window(window, scene.height, scene.width)
    raw = scene.read(list(spec.bands), inner)
    valid = np.isfinite(raw).all(axis=0)
    if has_own_validity(scene):
        valid &= scene.valid_mask(inner, list(spec.bands))
    channels = spec.apply(raw)
    valid &= np.isfinite(channels).all(axis=0)
    return pad_array(channels, pad, pad_mode), pad_array(valid, pad, "constant")


def read_channels(scene: Scene, window: Window, spec: InputSpec, *, pad_mode: str = "constant") -> np.ndarray:
    """Only the channels of :func:`read_inputs` (context windows, which need no validity)."""
    return spec.apply(scene.read(list(spec.bands), window, pad_mode=pad_mode))


def channel_reader(scene: Scene, spec: InputSpec, *, pad_mode: str = "reflect") -> Callable[[Window], np.ndarray]:
    """``window -> channels``: the reader :func:`icetools.contexts.read_contexts` takes."""
    return lambda window: read_channels(scene, window, spec, pad_mode=pad_mode)


__all__ = [
    "COS_SIN", "IDENTITY", "TRANSFORMS", "InputSpec", "as_input_spec", "channel_reader", "check_transform",
    "has_own_validity", "is_phase_band", "read_channels", "read_inputs",
]
