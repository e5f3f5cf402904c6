"""Simulated horizontal cell stage (mm) holding the sample and buffer capillaries, the standard and an open hole."""

from __future__ import annotations

import json

import numpy as np
from ophyd import Component as Cpt
from ophyd import Device, Kind, Signal
from ophyd.utils import LimitError

from agent.core.words import one_of, plain
from sim_devices.core.clock import SimClock
from sim_devices.core.faults import FaultQueue
from sim_devices.saxs.samples import SLOTS, in_beam, presets


def cell_contents(sample_name: str, buffer_name: str) -> dict:
    """What the user knows is in each slot (plain JSON, the stage's ``contents`` configuration): the path through
    sample and buffer (mm, on the capillary axis), the standard's thickness and its dΣ/dΩ(q) = dsdo0_cm·exp(−q²rg²/3)
    (cm⁻¹, q in nm⁻¹), the empty slot (no cell: the transmission reference)."""
    cell, gc = presets()["cell"], presets()["standard"]["glassy-carbon"]
    capillary = {"path_mm": float(cell["capillary_inner_diameter_mm"]), "cell": "quartz capillary",
                 "wall_um": float(cell["capillary_wall_um"])}
    return {"sample": {"name": sample_name, **capillary}, "buffer": {"name": buffer_name, **capillary},
            "standard": {"name": "glassy-carbon", "thickness_mm": float(gc["thickness_mm"]),
                         "dsdo0_cm": float(gc["dsdo0_cm"]), "rg_nm": float(gc["rg_nm"]),
                         "dsdo": "dsdo0_cm*exp(-(q_nm*rg_nm)**2/3)"},
            "empty": {"name": "open hole (no cell)"}}


class SimCellStage(Device):
    """Cell positioner (mm) on the simulated clock. ``set(x)`` takes x in mm or a slot name (``SLOTS``: sample 0,
    buffer 10, standard 20, empty 30 mm) and ``settle_s`` + |Δx|/``speed_mm_s`` seconds of beamtime; positions
    outside the limits raise ``LimitError`` before any motion. ``readback`` (hinted) is the position (mm), ``slot``
    the slot in the beam there ("" where the holder blocks it). ``fail_next(mode)``: ``"stall"`` (the move stops
    halfway and reports done: the readback shows it) or ``"hang"`` (the move never reports done)."""

    readback = Cpt(Signal, value=0.0, kind=Kind.hinted)
    setpoint = Cpt(Signal, value=0.0, kind=Kind.normal)
    slot = Cpt(Signal, value="sample", kind=Kind.normal)
    speed_mm_s = Cpt(Signal, value=5.0, kind=Kind.config)
    settle_s = Cpt(Signal, value=0.5, kind=Kind.config)
    low_limit_mm = Cpt(Signal, value=-5.0, kind=Kind.config)
    high_limit_mm = Cpt(Signal, value=35.0, kind=Kind.config)
    slots = Cpt(Signal, value=json.dumps(SLOTS), kind=Kind.config)
    contents = Cpt(Signal, value="{}", kind=Kind.config)

    def __init__(self, *args, clock: SimClock, start: float | str = "sample", contents: dict | None = None,
                 **kwargs):
        super().__init__(*args, **kwargs)
        cell = presets()["cell"]
        self.clock = clock
        self.speed_mm_s.put(float(cell["speed_mm_s"]))
        self.settle_s.put(float(cell["settle_s"]))
        self.low_limit_mm.put(float(cell["low_limit_mm"]))
        self.high_limit_mm.put(float(cell["high_limit_mm"]))
        self.contents.put(json.dumps(contents or {}))
        x = self.target(start)
        self.check_value(x)
        self._arrive(x)
        self.setpoint.put(x)
        self.moves = 0
        self.move_time_s = 0.0
        self._faults = FaultQueue("cell stage", ("stall", "hang"))

    @property
    def position(self) -> float:
        return float(self.readback.get())

    @property
    def limits(self) -> tuple[float, float]:
        return float(self.low_limit_mm.get()), float(self.high_limit_mm.get())

    @staticmethod
    def target(value: float | str) -> float:
        """The position (mm) of ``value``: a slot name (any case; ``ValueError`` with the close names) or mm."""
        return SLOTS[one_of(value, SLOTS, "cell slot")] if isinstance(value, str) else float(value)

    def check_value(self, value) -> None:
        """Raise ``LimitError`` if the position (mm) is outside the limits or not finite."""
        x = self.target(value)
        lo, hi = self.limits
        if not (np.isfinite(x) and lo <= x <= hi):
            raise LimitError(f"{self.name}: position {plain(x)} mm outside the range {lo:g}-{hi:g} mm")

    def fail_next(self, mode: str = "stall", n: int = 1, after: int = 0) -> None:
        """Make ``n`` moves fail after ``after`` good ones: ``"stall"`` (stops halfway) or ``"hang"`` (never done)."""
        self._faults.add(mode, n, after)

    def move_time(self, target: float | str) -> float:
        """Seconds of beamtime to move from here to ``target`` (mm or slot name)."""
        d = abs(self.target(target) - self.position)
        return 0.0 if d == 0 else float(self.settle_s.get()) + d / float(self.speed_mm_s.get())

    def _arrive(self, x: float) -> None:
        self.readback.put(float(x))
        self.slot.put(in_beam(x).slot or "")

    def set(self, value):
        x = self.target(value)
        self.check_value(x)
        failure = self._faults.pop()
        self.setpoint.put(x)
        duration = self.move_time(x)
        self.moves += duration > 0
        self.move_time_s += duration
        end = self.position + 0.5 * (x - self.position) if failure == "stall" else x
        return self.clock.action(duration, on_done=lambda t0, t1: self._arrive(end), obj=self,
                                 what=f"move to {x:g} mm", hang=failure == "hang")
