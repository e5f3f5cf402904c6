"""Live views of the adaptive runs, and the rehearsal figures drawn by the same code.

- ``LiveCompton``, ``LiveXAS``, ``LiveXPS``, ``LiveSAXS``: bluesky callbacks drawing one figure of a run from its
  documents (and the run's agent for fits and bands), throttled (≤ 2 redraws per second), final state at the stop.
- ``LiveViews``: the session's subscriber: a fresh view for each adaptive run (none for other plans), BEC's
  plots held for that run (the view draws the physics; BEC's curated hints still drive its table).
- ``StopReasonPrinter``: one plain line at every stop document (``bayesbeam.live.stop``).
- ``PosteriorLines``: one plain line per posterior update, the watched quantity ± its std against the target
  (``bayesbeam.live.table``; BEC's live table shows only the primary stream).
- ``replay_figure(catalog, uid, path)``: a stored run's figure, its agent rebuilt from the catalog.
"""

from __future__ import annotations

from bayesbeam.live.base import LiveFigure, pretty_reason
from bayesbeam.live.compton import LiveCompton
from bayesbeam.live.saxs import LiveSAXS
from bayesbeam.live.stop import StopReasonPrinter
from bayesbeam.live.table import PosteriorLines
from bayesbeam.live.xas import LiveXAS
from bayesbeam.live.xps import LiveXPS

#: The live view of each adaptive plan, by the start document's ``plan_name``.
VIEWS = {"adaptive_compton": LiveCompton, "adaptive_xas": LiveXAS, "adaptive_xps": LiveXPS,
         "adaptive_saxs": LiveSAXS}

__all__ = ["VIEWS", "LiveCompton", "LiveFigure", "LiveSAXS", "LiveViews", "LiveXAS", "LiveXPS", "PosteriorLines",
           "StopReasonPrinter", "pretty_reason", "replay_figure", "view_for"]


def view_for(start: dict, **kwargs) -> LiveFigure | None:
    """A new live view for the run of ``start`` (``None`` if its plan has none)."""
    cls = VIEWS.get(start.get("plan_name"))
    return cls(**kwargs) if cls is not None else None


class LiveViews:
    """RunEngine subscriber: for each run of an adaptive plan, a new live view (``view_for``, with ``kwargs``)
    fed with the run's documents; ``bec`` (a BestEffortCallback subscribed after this) does not plot that run
    (its table still runs). ``views``: the view of each run so far, by uid (the last ``keep``)."""

    def __init__(self, bec=None, keep: int = 5, **kwargs):
        self.bec, self.keep, self.kwargs = bec, int(keep), kwargs
        self.views: dict[str, LiveFigure] = {}
        self._current: LiveFigure | None = None
        self._held = False

    def __call__(self, name, doc):
        if name == "start":
            self._current = view_for(doc, **self.kwargs)
            if self._current is not None:
                self.views[doc["uid"]] = self._current
                while len(self.views) > self.keep:
                    self.views.pop(next(iter(self.views)))
                if self.bec is not None and self.bec._plots_enabled:
                    self.bec.disable_plots()
                    self._held = True
        if self._current is not None:
            self._current(name, doc)
        if name == "stop":
            self._current = None
            if self._held:
                self.bec.enable_plots()
                self._held = False


def replay_figure(catalog, uid: str, path, agent=None, **kwargs):
    """Write the live figure of stored run ``uid`` to ``path`` (PNG) by replaying its documents; returns the
    view. ``agent``: the run's agent as it ended (default: rebuilt from the catalog, ``bayesbeam.resume``, for
    Compton and XAS runs; an XPS run's figure then has no fits)."""
    from bayesbeam.catalog import replay
    from bayesbeam.resume import ResumeError, rebuild_agent

    run = catalog[uid]
    start = run.metadata["start"]
    if agent is None and start.get("plan_name") in ("adaptive_compton", "adaptive_xas"):
        try:
            agent = rebuild_agent(catalog, uid).agent
        except ResumeError:
            agent = None
    view = view_for(start, agent=agent, show=False, **kwargs)
    if view is None:
        raise ValueError(f"run {uid[:8]} is a {start.get('plan_name')!r} run: no live view draws it")
    replay(run, view)
    view.save(path)
    return view
