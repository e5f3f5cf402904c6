"""Continue a stored measurement that did not reach its target (interrupted, aborted, failed) in a new run.

The agent is rebuilt from the catalog alone: its configuration from the run's start document (the stop rule
as recorded in ``stop_rule``, the quantities, the sample), its state by replaying the stored documents of the
run, and of the runs it continued (``continue_from``, followed back to the first), through the plan's feeder
(``agent.feeders``). Only what the feeder takes counts: whole, valid ``+ − − +`` cycles (a cycle the run was
interrupted in has no ``cycles`` event and is measured again), XAS points whose stored readings prove them.
The new run records ``continue_from=<uid>`` and goes on to the same target; nothing already counted is
counted again.

- ``rebuild_agent(catalog, uid)``: the agent and the chain of runs it was rebuilt from.
- ``resume_compton(catalog, uid, detectors, magnet, **plan_kwargs)``, ``resume_xas(catalog, uid, detectors, mono,
  **plan_kwargs)``: the bluesky plans (any beamline, e.g. in the IPython session:
  ``RE(resume_compton(catalog, "a1b2c3d4", [ge], magnet, ring=ring, beamtime=beamtime))``).
- ``resume_run(uid, catalog=None, ...)``: ``bayesbeam resume``: the run continued on the simulated beamline.

Magnetic Compton (``adaptive_compton``) and XAS (``adaptive_xas``) runs. An XAS agent is rebuilt from its
``agent_config`` (its prior from the standards and options recorded there).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Any

from bayesbeam.catalog import load_backup, open_catalog, replay, run_status

RESUMABLE = ("adaptive_compton", "adaptive_xas")
#: Keys of a run's start document that a continuation carries over (what the run was, not how it went).
CARRIED_MD = ("sample", "sample_description", "purpose", "target_std", "target_quantity", "truth_spin_moment_mub",
              "beamline_id", "profile", "proposal_id", "operator")
#: The plan settings a continuation carries over, per plan.
_PLAN_SETTINGS = {"adaptive_compton": ("field_t", "beam_floor_ma", "tolerance_t", "max_consecutive_failures",
                                       "beam_poll_s"),
                  "adaptive_xas": ("beam_floor_ma", "energy_tolerance_ev", "max_consecutive_failures", "beam_poll_s")}


class ResumeError(ValueError):
    """A run that cannot be continued, and why (one line)."""


def parse_stop_rule(text: str):
    """The ``StopRule`` whose ``repr`` is ``text`` (a start document's ``stop_rule``), e.g.
    ``any_of(TargetStd(quantity='mu_s', target=0.01), Budget(cycles=136, points=None, beamtime_s=None))``.
    Only the rule classes of ``agent.core.stopping``, XAS's ``TargetRMSE`` and literal arguments are accepted (no
    ``eval``)."""
    from agent.core import stopping
    from agent.xas.agent import TargetRMSE

    allowed = {name: getattr(stopping, name) for name in
               ("TargetStd", "Plateau", "Budget", "ModelDecided", "any_of", "all_of")}
    allowed["TargetRMSE"] = TargetRMSE

    def build(node):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in allowed:
            args = [build(a) for a in node.args]
            kwargs = {k.arg: build(k.value) for k in node.keywords}
            return allowed[node.func.id](*args, **kwargs)
        return ast.literal_eval(node)

    try:
        return build(ast.parse(text, mode="eval").body)
    except (SyntaxError, ValueError, TypeError) as exc:
        raise ResumeError(f"cannot rebuild the stop rule {text!r}: {exc}") from None


def _compton_agent(start: dict, element: str | None = None):
    from agent.compton.agent import SpinMomentAgent
    from sim_devices.compton.samples import compton_sample

    if "stop_rule" not in start:
        raise ResumeError(f"run {start['uid'][:8]} does not record its agent's stop rule")
    config = dict(start.get("agent_config") or {})  # the agent's own settings, if the plan records them
    quantities = start.get("quantities") or ["mu_s", "a3d", "a4s"]
    orbitals = config.pop("orbitals", None) or [q[1:] for q in quantities if q[:1] == "a" and q[1:2].isdigit()]
    element = element or config.pop("element", None)
    if element is None:
        try:
            element = compton_sample(str(start.get("sample", ""))).element
        except ValueError:
            raise ResumeError(f"run {start['uid'][:8]} records neither its agent's element nor a sample preset "
                              f"(sample {start.get('sample')!r}): give the element") from None
    config.pop("element", None)
    try:
        return SpinMomentAgent(parse_stop_rule(start["stop_rule"]), element=element, orbitals=tuple(orbitals), **config)
    except ValueError as exc:  # an unknown element or orbital (given, or recorded): in the user's words
        raise ResumeError(f"run {start['uid'][:8]}: {exc}") from None


def _xas_agent(start: dict):
    from agent.xas import XASAgent

    if "stop_rule" not in start or "agent_config" not in start:
        raise ResumeError(f"run {start['uid'][:8]} does not record its agent's configuration (agent_config)")
    try:
        return XASAgent.from_config(parse_stop_rule(start["stop_rule"]), start["agent_config"])
    except (TypeError, ValueError) as exc:
        raise ResumeError(f"run {start['uid'][:8]}: cannot rebuild its XAS agent: {exc}") from None


@dataclass
class Rebuilt:
    """An agent rebuilt from the catalog: ``runs`` replayed into it (oldest first, the last is the one to
    continue), and the detector its feeder read."""

    agent: Any
    runs: list
    detector: str
    start: dict = field(default_factory=dict)

    @property
    def uid(self) -> str:
        return self.start["uid"]

    @property
    def plan(self) -> str:
        return self.start["plan_name"]

    def plan_settings(self, **overrides) -> dict:
        """The old run's plan settings that a continuation keeps, updated with ``overrides``."""
        keep = _PLAN_SETTINGS[self.plan]
        settings = {k: v for k, v in (self.start.get("plan_args") or {}).items() if k in keep and v is not None}
        settings.update(overrides)
        return settings

    def run_md(self, md: dict | None = None) -> dict:
        """What the new run's start document carries over (``CARRIED_MD``), updated with ``md``."""
        return {**{k: self.start[k] for k in CARRIED_MD if k in self.start}, **(md or {})}


def feeder_for(start: dict, agent):
    """The feeder the plan of ``start`` used, reading the fields it names."""
    from agent.feeders import ComptonFeeder, XASFeeder

    if start["plan_name"] == "adaptive_compton":
        return ComptonFeeder(agent, detector=(start.get("detectors") or ["ge"])[0])
    validity = start.get("validity") or {}
    (energy,), _ = start["hints"]["dimensions"][0]
    counts = validity.get("counts") or start["detectors"]
    if "monitor" in validity:  # the roles as the run named them (fluorescence runs on)
        return XASFeeder(agent, energy, validity["monitor"], validity.get("transmitted"), validity.get("reference"),
                         validity.get("fluorescence"))
    return XASFeeder(agent, energy, counts[0], counts[1], counts[2] if len(counts) > 2 else None)


def rebuild_agent(catalog, uid: str, element: str | None = None) -> Rebuilt:
    """The agent of run ``uid`` (full or partial uid) as it stood when the run ended, from the catalog alone.
    The run's journal, if its catalog copy is incomplete, is loaded first (``load_backup``). ``element``: a
    Compton agent's element, for a run that records neither it nor a sample preset."""
    run = _run(catalog, uid)
    chain = [run]
    while (previous := chain[0].metadata["start"].get("continue_from")) is not None:
        if len(chain) > 1000:
            raise ResumeError(f"run {uid}: continue_from links loop")
        chain.insert(0, _run(catalog, previous))
    start = run.metadata["start"]
    plan = start.get("plan_name")
    if plan not in RESUMABLE:
        raise ResumeError(f"run {start['uid'][:8]} is a {plan!r} run; only {', '.join(RESUMABLE)} runs can be resumed")
    for earlier in chain:
        if earlier.metadata["start"].get("plan_name") != plan:
            raise ResumeError(f"run {start['uid'][:8]} continues a {earlier.metadata['start'].get('plan_name')!r} run")
    agent = _compton_agent(start, element) if plan == "adaptive_compton" else _xas_agent(start)
    for stored in chain:
        replay(stored, feeder_for(stored.metadata["start"], agent))
    return Rebuilt(agent, chain, (start.get("detectors") or ["ge"])[0], start)


def _run(catalog, uid: str):
    """The run ``uid`` with every document it has anywhere: a journal its writer left is loaded first."""
    try:
        run = catalog[uid]
    except KeyError:
        run = None
    full = run.metadata["start"]["uid"] if run is not None else uid
    loaded = load_backup(catalog, uids=[full])
    if any(row["action"] == "failed" for row in loaded):
        raise ResumeError(f"run {full[:8]}: its journal could not be loaded: {loaded[0]['error']}")
    try:
        return catalog[full]
    except KeyError:
        raise ResumeError(f"no run {uid!r} in the catalog") from None


def _check_resumable(rebuilt: Rebuilt) -> None:
    run = rebuilt.runs[-1]
    status = run_status(run)
    uid = rebuilt.uid[:8]
    if status == "running":
        raise ResumeError(f"run {uid} is still running")
    stop, reason = rebuilt.agent.should_stop()
    if stop:
        raise ResumeError(f"run {uid} ({status}) already reached its stop rule: {reason}")


def resume_compton(catalog, uid: str, detectors, magnet, *, element: str | None = None, md: dict | None = None,
                   **plan_kwargs):
    """A bluesky plan continuing the magnetic-Compton run ``uid`` in a new run (``adaptive_compton`` with the
    rebuilt agent, ``continue_from`` the old run, the old run's plan settings and description unless given
    in ``plan_kwargs`` / ``md``). Returns the stop reason, as ``adaptive_compton`` does."""
    from plans.compton.flip_cycles import adaptive_compton

    rebuilt = _rebuilt_for(catalog, uid, "adaptive_compton", element)
    return (yield from adaptive_compton(detectors, magnet, rebuilt.agent, continue_from=rebuilt.uid,
                                        md=rebuilt.run_md(md), **rebuilt.plan_settings(**plan_kwargs)))


def resume_xas(catalog, uid: str, detectors, mono, *, md: dict | None = None, **plan_kwargs):
    """A bluesky plan continuing the XAS run ``uid`` in a new run (``adaptive_xas`` with the rebuilt agent,
    ``continue_from`` the old run, the old run's plan settings and description unless given in
    ``plan_kwargs`` / ``md``). Returns the stop reason, as ``adaptive_xas`` does."""
    from plans.xas.energy_points import adaptive_xas

    rebuilt = _rebuilt_for(catalog, uid, "adaptive_xas")
    return (yield from adaptive_xas(detectors, mono, rebuilt.agent, continue_from=rebuilt.uid,
                                    md=rebuilt.run_md(md), **rebuilt.plan_settings(**plan_kwargs)))


def register_rebuilders(catalog) -> None:
    """Let the plans rebuild a stored run's agent from ``catalog`` (``plans.registry.register_rebuilder``): a plan
    queued with ``continue_from=<uid>`` and no agent goes on with that run's agent, checked resumable."""
    from plans.registry import register_rebuilder

    for plan in RESUMABLE:
        def rebuild(uid: str, plan: str = plan):
            rebuilt = _rebuilt_for(catalog, uid, plan)
            return rebuilt.agent, rebuilt.uid

        register_rebuilder(plan, rebuild)


def _rebuilt_for(catalog, uid: str, plan: str, element: str | None = None) -> Rebuilt:
    rebuilt = rebuild_agent(catalog, uid, element)
    if rebuilt.plan != plan:
        raise ResumeError(f"run {rebuilt.uid[:8]} is a {rebuilt.plan!r} run, not {plan!r}")
    _check_resumable(rebuilt)
    return rebuilt


@dataclass
class Resumed:
    """Outcome of ``resume_run``: the new run's uid, the run it continues, the agent, its stop reason, and the
    valid measurements (``unit``: Compton ``cycles``, XAS ``points``) taken before (in the runs continued) and
    in the new run; beamtime in s."""

    uid: str | None
    continued: str
    agent: Any
    stop_reason: str
    before: int
    now: int
    unit: str
    beamtime_s: float


def _measured(agent) -> int:
    return int(agent.cycles) if hasattr(agent, "cycles") else len(agent.post.data_e)


def resume_run(uid: str, catalog=None, *, time_scale: float = 1e4, seed: int | None = None,
               element: str | None = None, RE=None) -> Resumed:
    """Continue the stored run ``uid`` on the simulated beamline (``bayesbeam resume``): the agent rebuilt from
    the catalog (``catalog``: a client or a location, default the default catalog), the sample and count
    time of the old run, a fresh random stream (``seed``, default none: nothing already counted is simulated
    again), stored through ``RE`` (default a RunEngine on the catalog). A run measured over EPICS is continued
    in its session (``resume_compton``, ``resume_xas``)."""
    from bayesbeam.session import make_run_engine

    client = catalog if hasattr(catalog, "context") else open_catalog(catalog)
    rebuilt = rebuild_agent(client, uid, element)
    _check_resumable(rebuilt)
    if rebuilt.start.get("profile") == "epics":
        call = ("resume_compton(catalog, {uid!r}, [ge], magnet, ring=ring, beamtime=beamtime)"
                if rebuilt.plan == "adaptive_compton" else "resume_xas(catalog, {uid!r}, [i0, it], mono, ring=ring)")
        raise ResumeError(f"run {rebuilt.uid[:8]} was measured over EPICS: continue it in its session, "
                          f"RE({call.format(uid=rebuilt.uid[:8])})")
    agent = rebuilt.agent
    before = _measured(agent)
    RE = RE if RE is not None else make_run_engine(client)
    md = rebuilt.run_md({"seed": seed})
    plan = (_simulated_compton if rebuilt.plan == "adaptive_compton" else _simulated_xas)(rebuilt, time_scale, seed, md)
    uids = RE(plan)
    _, reason = agent.should_stop()
    return Resumed(uids[0] if uids else None, rebuilt.uid, agent, reason or "", before, _measured(agent) - before,
                   "cycles" if rebuilt.plan == "adaptive_compton" else "points", float(agent.beamtime_s))


def _simulated_compton(rebuilt: Rebuilt, time_scale: float, seed: int | None, md: dict):
    from plans.compton.flip_cycles import adaptive_compton
    from sim_devices.compton.beamline import make_compton_beamline
    from sim_devices.core.clock import BeamtimeSignal

    config = rebuilt.runs[-1]["primary"].metadata["configuration"][rebuilt.detector]["data"]
    count_time = float(config.get(f"{rebuilt.detector}_preset_time", 60.0))
    try:
        beamline = make_compton_beamline(str(rebuilt.start.get("sample", "")), time_scale=time_scale, seed=seed,
                                         count_time_s=count_time)
    except ValueError as exc:
        raise ResumeError(f"run {rebuilt.uid[:8]} cannot be continued on the simulated beamline: {exc}") from None
    beamtime = BeamtimeSignal(beamline.clock, name="beamtime")  # the feeder adds the agent's beamtime so far
    return adaptive_compton([beamline.ge], beamline.magnet, rebuilt.agent, ring=beamline.ring, beamtime=beamtime,
                            continue_from=rebuilt.uid, md=md, **rebuilt.plan_settings(beam_poll_s=0.0))


def _simulated_xas(rebuilt: Rebuilt, time_scale: float, seed: int | None, md: dict):
    from bayesbeam.rehearsal.xas.rehearse import make_xas_beamline
    from plans.xas.energy_points import adaptive_xas

    try:
        beamline = make_xas_beamline(str(rebuilt.start.get("sample", "")), time_scale=time_scale, seed=seed,
                                     cost=rebuilt.agent.cost)
    except (KeyError, ValueError) as exc:
        raise ResumeError(f"run {rebuilt.uid[:8]} cannot be continued on the simulated beamline: {exc}") from None
    return adaptive_xas([beamline.i0, beamline.it], beamline.mono, rebuilt.agent, beamtime=beamline.beamtime,
                        continue_from=rebuilt.uid, md=md, **rebuilt.plan_settings(beam_poll_s=0.0))
