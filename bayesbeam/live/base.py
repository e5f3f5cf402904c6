"""The shared machinery of the live views: a bluesky callback owning one matplotlib figure, fed with a run's
documents (live from the RunEngine, or replayed from the catalog), redrawn at most ``max_rate_hz`` times a
second of wall time and once more, with the final state, at the stop document.

On a screen (an interactive matplotlib backend: IPython with a display) the figure is a pyplot window and
each redraw is a ``draw_idle`` (bluesky's Qt teleporter carries documents to the GUI thread, as for its own
``LivePlot``). Headless (Agg) it is a bare ``Figure`` on an Agg canvas: frames are rendered only if asked
(``draw_frames=True``, as a benchmark emulating a screen does), and ``save(path)`` writes the PNG.
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib
from bluesky.callbacks.mpl_plotting import QtAwareCallback

#: Backends that draw to no screen.
HEADLESS = ("agg", "pdf", "ps", "svg", "cairo", "template", "module://matplotlib_inline.backend_inline")

#: Labels of the quantities the agents report (mathtext), for axes and legends.
LABELS = {"mu_s": r"$\mu_s$", "a3d": r"$a_{3d}$", "a4s": r"$a_{4s}$", "a4p": r"$a_{4p}$", "a2p": r"$a_{2p}$",
          "gamma": r"$\Gamma$", "misfit": r"misfit $\tau$", "delta_f": r"$\Delta_f = \Delta - U_{fc}$",
          "V": r"$V$", "delta": r"$\Delta$", "U_ff": r"$U_{ff}$", "U_fc": r"$U_{fc}$", "rmse": "RMSE"}


#: The same names in plain text (terminal lines).
PLAIN = {"mu_s": "μs", "gamma": "Γ", "misfit": "misfit τ", "delta_f": "Δf", "delta": "Δ", "rmse": "RMSE"}


def label(quantity: str, plain: bool = False) -> str:
    """The printed name of a reported quantity: mathtext (``mu_s`` → ``$\\mu_s$``) or, ``plain``, text (μs)."""
    return PLAIN.get(quantity, quantity) if plain else LABELS.get(quantity, quantity)


def on_screen() -> bool:
    """Whether matplotlib's backend draws to a screen."""
    return matplotlib.get_backend().lower() not in HEADLESS


def stop_targets(stop_rule: str | None) -> dict[str, float]:
    """The targets a stored stop rule (``repr``, the start document's ``stop_rule``) names: ``<q>_std`` of each
    target-std rule, ``rmse_pred`` of a target RMSE, ``model_prob_max`` of a model decision; budgets as
    ``budget_<key>``. ``{}`` if it cannot be read."""
    if not stop_rule:
        return {}
    from bayesbeam.resume import ResumeError, parse_stop_rule

    try:
        rule = parse_stop_rule(stop_rule)
    except ResumeError:
        return {}
    from agent.core.stopping import leaf_rules

    out: dict[str, float] = {}
    for r in leaf_rules(rule):
        name = type(r).__name__
        if name == "TargetStd":
            out.setdefault(f"{r.quantity}_std", float(r.target))
        elif name == "TargetRMSE":
            out.setdefault("rmse_pred", float(r.target))
        elif name == "ModelDecided":
            out.setdefault("model_prob_max", float(r.p))
        elif name == "Budget":
            for key in ("cycles", "points", "runs", "beamtime_s"):
                if getattr(r, key) is not None:
                    out.setdefault(f"budget_{key}", float(getattr(r, key)))
    return out


def pretty_reason(reason: str, plain: bool = False) -> str:
    """A stop reason as a figure title reads it: ``target_std: std(mu_s) = 0.0098 <= 0.01`` →
    ``target reached: σ(μs) = 0.0098 ≤ 0.01`` (μs in mathtext, or ``plain`` text)."""
    if not reason:
        return ""
    rule, _, rest = reason.partition(": ")
    words = {"target_std": "target reached", "target_rmse": "target reached", "plateau": "precision plateau",
             "budget": "budget spent", "model_decided": "model decided", "aborted": "aborted"}
    text = rest if rest else rule
    for q in LABELS:
        text = text.replace(f"std({q})", f"σ({label(q, plain)})")
    text = text.replace("<=", "≤").replace(">=", "≥")
    return f"{words.get(rule, rule)}: {text}" if rest else text


def spectrum_and_history_axes(fig, *, height_ratios, width_ratios, top: float, hspace: float, residual_label: str):
    """The layout every live view shares: left, a spectrum over its residual panel (±2 and 0 lines drawn,
    ``residual_label`` on its y axis); right, a history panel over a second one sharing its x axis.
    Returns ``(spectrum, residual, history, history_below)``."""
    grid = fig.add_gridspec(2, 2, height_ratios=height_ratios, width_ratios=width_ratios, hspace=hspace,
                            wspace=0.22, left=0.07, right=0.98, top=top, bottom=0.08)
    spectrum = fig.add_subplot(grid[0, 0])
    residual = fig.add_subplot(grid[1, 0], sharex=spectrum)
    history = fig.add_subplot(grid[0, 1])
    below = fig.add_subplot(grid[1, 1], sharex=history)
    spectrum.tick_params(labelbottom=False)
    history.tick_params(labelbottom=False)
    residual.set_ylabel(residual_label)
    for y in (-2, 0, 2):
        residual.axhline(y, color="0.75", lw=0.6, ls="-" if y == 0 else ":")
    return spectrum, residual, history, below


class LiveFigure(QtAwareCallback):
    """One figure of a run, fed with its documents. Subclasses lay the figure out (``layout(fig)``), keep what
    they need from the documents (``on_start``, ``on_event(stream, data)``) and set their artists' data
    (``refresh()``), reading the run's agent (``self.agent``: given, else the one a feeder of this process feeds
    from the run, ``agent.feeders.agent_of_run``) for curves the documents do not hold (fits, bands).

    ``max_rate_hz``: redraws per wall-clock second at most, and ``max_busy``: the fraction of wall time redraws
    may take (after a frame that took d s the next waits at least d / ``max_busy``); the final state is always
    drawn at the stop. Headless without ``draw_frames`` nothing is drawn until the stop.
    ``show``: a pyplot window (default: when the backend draws to a screen). ``draw_frames``: render every
    redraw (default: on a screen; headless only the final state is rendered, by ``save``).
    ``path``: write the PNG there at the stop document.
    """

    figsize = (12.0, 7.0)
    title = "live"

    def __init__(self, agent: Any = None, *, max_rate_hz: float = 2.0, max_busy: float = 0.1, show: bool | None = None,
                 draw_frames: bool | None = None, path: str | Path | None = None):
        self.show = on_screen() if show is None else bool(show)
        super().__init__(use_teleporter=None if self.show else False)
        self._given_agent = agent
        self.agent = agent
        self.min_interval_s = 1.0 / float(max_rate_hz) if max_rate_hz > 0 else 0.0
        self.max_busy = float(max_busy)
        self._interval = self.min_interval_s
        self.draw_frames = self.show if draw_frames is None else bool(draw_frames)
        self.path = Path(path) if path is not None else None
        self.fig = None
        self.start_doc: dict[str, Any] = {}
        self.stop_doc: dict[str, Any] = {}
        self.targets: dict[str, float] = {}
        self.redraws = 0  # frames drawn during the run (not counting the final one)
        self._streams: dict[str, str] = {}
        self._last_draw = -float("inf")

    # -- documents ----------------------------------------------------------------------------------------
    def start(self, doc):
        self.start_doc, self.stop_doc, self._streams = dict(doc), {}, {}
        self.agent = self._given_agent
        self.targets = stop_targets(doc.get("stop_rule"))
        self.redraws, self._last_draw, self._interval = 0, -float("inf"), self.min_interval_s
        if self.fig is None:
            self.fig = self._new_figure()
        else:
            self.fig.clear()
        self.layout(self.fig)
        self.on_start(doc)

    def descriptor(self, doc):
        self._streams[doc["uid"]] = doc["name"]

    def event(self, doc):
        stream = self._streams.get(doc["descriptor"])
        if stream is None:
            return
        if self.on_event(stream, doc["data"], doc) and self.fig is not None and (self.show or self.draw_frames):
            now = time.monotonic()
            if now - self._last_draw >= self._interval:
                self._redraw()
                self._last_draw, took = time.monotonic(), time.monotonic() - now
                self._interval = max(self.min_interval_s, took / self.max_busy if self.max_busy > 0 else 0.0)
                self.redraws += 1

    def stop(self, doc):
        self.stop_doc = dict(doc)
        if self.fig is None:
            return
        self._redraw(final=True)
        if self.path is not None:
            self.save(self.path)

    # -- drawing ------------------------------------------------------------------------------------------
    def _new_figure(self):
        if self.show:
            import matplotlib.pyplot as plt

            return plt.figure(num=self.title, figsize=self.figsize, clear=True)
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=self.figsize)
        FigureCanvasAgg(fig)
        return fig

    def current_agent(self):
        """The run's agent: given, else the one this process's feeder feeds from the run (None if neither)."""
        if self.agent is None and self.start_doc.get("uid"):
            from agent.feeders import agent_of_run

            self.agent = agent_of_run(self.start_doc["uid"])
        return self.agent

    def _redraw(self, final: bool = False) -> None:
        self.refresh(final=final)
        if self.show:
            self.fig.canvas.draw_idle()
        elif self.draw_frames:
            self.fig.canvas.draw()  # headless otherwise: ``save`` renders

    def save(self, path: str | Path, dpi: int = 120) -> Path:
        """Write the figure as it stands (PNG, or what the suffix says); returns the path."""
        path = Path(path)
        self.fig.savefig(path, dpi=dpi)
        return path

    # -- what a technique's view defines ------------------------------------------------------------------
    def layout(self, fig) -> None:
        raise NotImplementedError

    def on_start(self, doc: Mapping[str, Any]) -> None:
        """Reset what is kept from the documents."""

    def on_event(self, stream: str, data: Mapping[str, Any], doc: Mapping[str, Any]) -> bool:
        """Keep what this event says; ``True`` if the figure should be redrawn (throttled)."""
        return False

    def refresh(self, final: bool = False) -> None:
        """Set the artists' data from what was kept (and the agent's curves)."""
        raise NotImplementedError

    def artists(self) -> dict[str, Any]:
        """The named artists of the figure (for tests): lines, bands, target lines, legends."""
        return {}


def resolved_format(std) -> str:
    """The fixed-point format that shows a value to two significant digits of its ``std`` (``.4g`` without one)."""
    if not (isinstance(std, numbers.Real) and math.isfinite(std) and std > 0):
        return ".4g"
    return f".{max(0, 1 - math.floor(math.log10(std)))}f"
