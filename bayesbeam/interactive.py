"""What both IPython profiles share: the RunEngine wired to the catalog and a live table, and the banner."""

from __future__ import annotations

import os

from bluesky.callbacks.best_effort import BestEffortCallback

from bayesbeam.catalog import default_catalog_location, open_catalog
from bayesbeam.session import make_run_engine


def configure_session(md: dict, plots: bool | None = None):
    """``(RE, catalog, bec)``: a RunEngine storing every document in the catalog
    (``$BAYESBEAM_CATALOG`` or the default) with bluesky's BestEffortCallback subscribed (its plots skip the
    ``posterior``/``cycles``/``sweeps`` streams), a line per posterior update (the watched quantity ± std and
    its target), a stop-reason line after every run, and, with plots on, the
    adaptive runs' live views (``bayesbeam.live.LiveViews``; ``$BAYESBEAM_LIVE=0``: BEC's plots instead). Plots are
    on when a display is available (``plots=None``) or as asked; ``$BAYESBEAM_PLOTS=0`` turns them off,
    and so does running in bluesky-queueserver's worker (the same startup files: a daemon has no screen;
    its live table goes to the manager's console output)."""
    from bluesky_queueserver import is_re_worker_active

    from bayesbeam.live import LiveViews, PosteriorLines, StopReasonPrinter
    from bayesbeam.resume import register_rebuilders

    catalog = open_catalog()
    RE = make_run_engine(catalog, md=md)
    register_rebuilders(catalog)  # a plan given continue_from and no agent rebuilds it from this catalog
    bec = BestEffortCallback()
    bec.noplot_streams += ["posterior", "cycles", "sweeps"]  # agent reports and bookkeeping: the live views draw them
    if plots is None:
        plots = bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")) \
            and os.environ.get("BAYESBEAM_PLOTS", "1") != "0" and not is_re_worker_active()
    if not plots:
        bec.disable_plots()
    elif os.environ.get("BAYESBEAM_LIVE", "1") != "0":  # the adaptive runs' own figures; BEC plots the other plans
        RE.subscribe(LiveViews(bec))
    RE.subscribe(bec)
    RE.subscribe(PosteriorLines())  # the watched quantity ± std after each update, under BEC's table rows
    RE.subscribe(StopReasonPrinter())  # one line when RE() returns: how the run ended and why
    return RE, catalog, bec


def banner(title: str, devices: dict, extra: list[str]) -> str:
    """A short session banner: what is connected, where runs go, one line to start."""
    lines = [title, f"  catalog: {default_catalog_location()}  (RE stores every run; `catalog` to browse)",
             "  devices: " + ", ".join(f"{k} ({type(v).__name__})" for k, v in devices.items()), *extra]
    return "\n".join(lines)
