"""What a model reads: scene bands, each turned into model channels by a named transform.

A wrapped interferometric phase is circular: -pi and +pi are the same value, so fed raw its wrap
is a sharp edge the network must learn to ignore. The ``cos-sin`` transform feeds (cos, sin) of the
angle instead, which is continuous across the wrap; every other band enters as it is
(``identity``). Bands named like a phase (``phase``, ``*_phase``, e.g. ``interferometric_phase``,
any case) get ``cos-sin`` unless told otherwise.

config.json records the bands under ``"inputs"`` and the transforms under ``"input_transforms"``
(band -> transform); a config without transforms (made before they existed) means identity for every
band. The model's ``in_channels`` and the normalisation statistics count channels after the transform.
``"input_units"`` (band -> ``dB`` / ``linear``) records the backscatter units the model learned from.

A spec names the model's bands; :func:`bind_inputs` finds them in one scene (a caller's ``bands``
mapping first, then :meth:`icetools.io.scene.Scene.resolve`: Sentinel-1 aliases, band indices, HH/HV
by position) and converts linear sigma0 to dB (or back) where the scene's units differ from the model's.

:func:`read_inputs` is the one place where bands become channels: the training datasets, the
normalisation statistics and predict's strip reader all call it, so training and prediction can not
feed a model different numbers for the same pixels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from rasterio.windows import Window

from icetools.errors import ConfigError, IcetoolsError, MissingVariableError
from icetools.io.bands import DB, SAR_UNITS, conversion, convert, sar_polarisation, units_from_text
from icetools.io.scene import AmbiguousBandError, Scene, clamp_window, open_scene, pad_array

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
    """The bands a model reads, in order, and the transform of each (same length).

    Bound to a scene (:func:`bind_inputs`) it also says which scene band each is read from
    (``sources``) and the unit conversion applied on reading (``conversions``, ``""`` for none).
    """

    bands: tuple[str, ...]
    transforms: tuple[str, ...]
    sources: tuple[str, ...] = ()
    conversions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.bands) != len(self.transforms):
            raise ConfigError(f"{len(self.bands)} input bands but {len(self.transforms)} transforms")
        for name, values in (("sources", self.sources), ("conversions", self.conversions)):
            if values and len(values) != len(self.bands):
                raise ConfigError(f"{len(self.bands)} input bands but {len(values)} {name}")
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

    @property
    def read_names(self) -> list[str]:
        """The scene bands to read: the bound sources, else the band names (resolved by the scene)."""
        return list(self.sources or self.bands)

    def convert(self, raw: np.ndarray) -> np.ndarray:
        """(..., bands, h, w) values as read -> in the model's units (linear sigma0 -> dB, say)."""
        if not any(self.conversions):
            return raw
        out = raw.astype("float32", copy=True)
        for i, how in enumerate(self.conversions):
            if how:
                out[..., i, :, :] = convert(out[..., i, :, :], how)
        return out

    def describe_binding(self) -> str:
        """One line for messages: ``nersc_sar_primary <- HH (linear->dB); nersc_sar_secondary <- HV``."""
        parts = []
        for i, band in enumerate(self.bands):
            source = self.sources[i] if self.sources else band
            how = self.conversions[i] if self.conversions else ""
            parts.append((band if source == band else f"{band} <- {source}") + (f" ({how})" if how else ""))
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
    raw = spec.convert(scene.read(spec.read_names, inner))
    valid = np.isfinite(raw).all(axis=0)
    if has_own_validity(scene):
        valid &= scene.valid_mask(inner, spec.read_names)
    channels = spec.apply(raw)
    valid &= np.isfinite(channels).all(axis=0)
    return pad_array(channels, pad, pad_mode), pad_array(valid, pad, "constant")


def read_channels(scene: Scene, window: Window, spec: InputSpec, *, pad_mode: str = "constant") -> np.ndarray:
    """Only the channels of :func:`read_inputs` (context windows, which need no validity)."""
    return spec.apply(spec.convert(scene.read(spec.read_names, window, pad_mode=pad_mode)))


def channel_reader(scene: Scene, spec: InputSpec, *, pad_mode: str = "reflect") -> Callable[[Window], np.ndarray]:
    """``window -> channels``: the reader :func:`icetools.contexts.read_contexts` takes."""
    return lambda window: read_channels(scene, window, spec, pad_mode=pad_mode)


# --- a model's bands in one scene ------------------------------------------------------------------


def parse_band_map(text: str | None) -> dict[str, str]:
    """``"nersc_sar_primary=HH,nersc_sar_secondary=2"`` -> {model band: file band}; ConfigError otherwise."""
    mapping: dict[str, str] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        model_band, sep, file_band = (p.strip() for p in part.partition("="))
        if not sep or not model_band or not file_band:
            raise ConfigError(f"bands entry {part.strip()!r} is not MODEL_BAND=FILE_BAND, e.g. nersc_sar_primary=HH")
        if model_band in mapping:
            raise ConfigError(f"bands names model band {model_band!r} twice")
        mapping[model_band] = file_band
    return mapping


def check_band_map(band_map: Mapping[str, str], bands: Sequence[str]) -> None:
    """Every key of a band mapping is a band the model reads; ConfigError listing them otherwise."""
    unknown = [name for name in band_map if name not in bands]
    if unknown:
        raise ConfigError(
            f"bands maps {', '.join(map(repr, unknown))}, which the model does not read; it reads {', '.join(bands)}"
        )


def model_input_units(config: Mapping[str, Any], spec: InputSpec | None = None) -> dict[str, str]:
    """Backscatter units per input band the model learned from: config ``input_units``; for a config
    without it, a Sentinel-1 band whose normalisation mean is below -1 was in dB (linear sigma0 and
    standard-scaled values average above that)."""
    recorded = config.get("input_units")
    if recorded is not None:
        if not (isinstance(recorded, Mapping) and all(isinstance(v, str) for v in recorded.values())):
            raise ConfigError(f'config "input_units" must map band names to units, got {recorded!r}')
        return {band: units_from_text(unit) or unit for band, unit in recorded.items()}
    spec = spec or InputSpec.from_config(config)
    norm = config.get("normalization") or {}
    mean = norm.get("mean") if isinstance(norm, Mapping) else None
    if spec is None or not isinstance(mean, list) or len(mean) != spec.n_channels:
        return {}
    units, channel = {}, 0
    for band, transform in zip(spec.bands, spec.transforms):
        if transform == IDENTITY and sar_polarisation(band) is not None and isinstance(mean[channel], (int, float)) \
                and mean[channel] < -1:
            units[band] = DB
        channel += len(TRANSFORMS[transform])
    return units


def recorded_input_units(scene_paths: Sequence[str | Path], bands: Sequence[str]) -> dict[str, str]:
    """``input_units`` for config.json: the backscatter units of each input band in the first training
    scene that holds it (bands of unknown units, or not in the scenes, are left out)."""
    units: dict[str, str] = {}
    for path in list(scene_paths)[:1]:
        try:
            scene = open_scene(path)
        except IcetoolsError:  # a record, not a check: training has read its scenes already
            return units
        with scene:
            for band in bands:
                try:
                    unit = scene.band_unit(band)
                except MissingVariableError:  # a refiner's crude bands live in other files
                    continue
                if unit in SAR_UNITS:
                    units[band] = unit
    return units


def bind_inputs(
    scene: Scene, spec: InputSpec, *, band_map: Mapping[str, str] | None = None, units: Mapping[str, str] | None = None,
) -> InputSpec:
    """``spec`` bound to ``scene``: the scene band of each model band and the unit conversion to apply.

    ``band_map`` (model band -> file band) wins over the scene's own matching (:meth:`Scene.resolve`);
    ``units`` (model band -> ``dB``/``linear``) converts bands whose scene units differ. Every band
    that cannot be found is named at once.
    """
    band_map = dict(band_map or {})
    check_band_map(band_map, spec.bands)
    sources, missing = [], []
    for band in spec.bands:
        wanted = band_map.get(band, band)
        try:
            sources.append(scene.resolve([wanted])[0])
        except MissingVariableError as exc:
            if band in band_map:
                raise MissingVariableError(f"bands maps {band} to {wanted!r}: {exc}") from None
            if isinstance(exc, AmbiguousBandError):
                raise
            missing.append(band)
    if missing:
        raise MissingVariableError(
            f"{scene.path.name} lacks band(s) {', '.join(missing)} that the model needs; bands found: "
            f"{', '.join(scene.band_names)}; map them with bands MODEL_BAND=FILE_BAND (e.g. {missing[0]}=band1)"
        )
    units = dict(units or {})
    conversions = tuple(
        conversion(scene.band_unit(source), units.get(band)) if units.get(band) in SAR_UNITS else ""
        for band, source in zip(spec.bands, sources)
    )
    return replace(spec, sources=tuple(sources), conversions=conversions)


__all__ = [
    "COS_SIN", "IDENTITY", "TRANSFORMS", "InputSpec", "as_input_spec", "bind_inputs", "channel_reader",
    "check_band_map", "check_transform", "has_own_validity", "is_phase_band", "model_input_units", "parse_band_map",
    "read_channels", "read_inputs", "recorded_input_units",
]
