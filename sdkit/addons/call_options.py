"""The add-on options of one call: their checks that need no model, and replay's way back.

:meth:`sdkit.options.GenerationOptions.check_alone` runs :func:`check_addon_options` on
``control``, the ``hires_*`` options, ``refiner_switch``, ``loras`` and ``fuse_loras``;
:meth:`~sdkit.options.GenerationOptions.from_recipe` reads them back from a Recipe's add-on
records with :func:`addon_options_from_records`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from ._record import AddonRecord
from .control import check_control
from .hires import check_hires
from .lora import LoraWeight, check_loras, loras_from_records
from .passes import AddonOptions, options_from_records
from .refiner import check_switch

__all__ = ["AddonCallOptions", "addon_options_from_records", "check_addon_options"]


class AddonCallOptions(AddonOptions, Protocol):
    """The add-on options of a call (:class:`sdkit.options.GenerationOptions` has them)."""

    @property
    def loras(self) -> Mapping[str, LoraWeight] | None: ...
    @property
    def fuse_loras(self) -> bool: ...


def check_addon_options(options: AddonCallOptions, *, has_init: bool) -> None:
    """Check the add-on options alone (files are read when a call runs).

    Raises:
        InvalidOptionError: the first invalid option, with what is allowed and a hint.
    """
    check_control(options.control)
    hires = options.hires_scale, options.hires_upscaler, options.hires_steps
    check_hires(*hires, options.hires_strength, has_init=has_init)
    if options.refiner_switch is not None:
        check_switch(options.refiner_switch)
    check_loras(options.loras, options.fuse_loras)


def addon_options_from_records(records: Sequence[AddonRecord]) -> dict[str, Any]:
    """The add-on call options a Recipe's records say: ``loras=`` (the prompt's ``<lora:>``
    tags name their own), ``fuse_loras``, the hires fix and the refiner switch."""
    return {
        "loras": loras_from_records(records),
        "fuse_loras": any(r.kind == "lora" and r.settings.get("fused") for r in records),
        **options_from_records(records),
    }
