// The status page's renderer: fetches /status.json every `refresh` s (?refresh=S, default 2, 0.5-60) and
// fills the tables. Text goes in with textContent only: nothing from the queue or the catalog is parsed as HTML.
"use strict";

const params = new URLSearchParams(window.location.search);
const REFRESH_S = Math.min(60, Math.max(0.5, Number(params.get("refresh")) || 2));
let polls = 0;
let lastOk = null;

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function fix(x, digits) {
  return (x === null || x === undefined || !Number.isFinite(x)) ? "–" : x.toFixed(digits);
}

function sig(x, digits) {
  return (x === null || x === undefined || !Number.isFinite(x)) ? "–" : String(Number(x.toPrecision(digits)));
}

function short(uid) {
  return uid ? String(uid).slice(0, 8) : "–";
}

function clock(t) {
  return t ? new Date(t * 1000).toLocaleTimeString() : "–";
}

function setText(id, text, cls) {
  const node = document.getElementById(id);
  node.textContent = text;
  node.className = cls || "";
}

function fillRows(tableId, rows, cells) {
  const body = document.querySelector("#" + tableId + " tbody");
  body.replaceChildren();
  for (const row of rows) {
    const tr = document.createElement("tr");
    for (const cell of cells(row)) {
      tr.appendChild(cell instanceof Node ? cell : el("td", cell));
    }
    body.appendChild(tr);
  }
}

function num(text, cls) {
  return el("td", text, "num" + (cls ? " " + cls : ""));
}

function renderQueue(s) {
  const m = s.manager || {};
  if (!m.answers) {
    setText("manager-state", m.error || "manager not answering", "down");
  } else {
    const env = m.environment ? "environment open" : "environment closed";
    setText("manager-state", "manager " + m.state + " (RE " + (m.re_state || "–") + ", " + env + "); " +
      m.items_in_queue + " queued, " + m.items_in_history + " in history" + (m.msg ? "; " + m.msg : ""), "ok");
  }
  const r = s.running_item;
  setText("running-item", r ? "running: " + r.name + "(" + r.params + ")" + (r.campaign ? " for campaign " +
    r.campaign : "") + " by " + (r.user || "–") : "running: nothing", r ? "" : "muted");
  fillRows("queue-table", s.queue || [], (item) => [
    num((s.queue.indexOf(item) + 1)), el("td", item.name), el("td", [item.args, item.params].filter(Boolean).join("; ")),
    el("td", item.user || "–"), el("td", item.campaign || "–"),
  ]);
  setText("queue-empty", (s.queue || []).length ? "" : "the queue is empty", "muted");
  fillRows("history-table", s.history || [], (item) => [
    el("td", item.name), el("td", item.params), el("td", item.exit_status || "–"),
    el("td", (item.run_uids || []).map(short).join(", ") || "–"), el("td", item.msg || ""),
  ]);
}

function renderRun(s) {
  const run = s.running_run;
  if (!run) {
    setText("run-summary", "no run open", "muted");
    fillRows("posterior-table", [], () => []);
    return;
  }
  const steps = run.steps_name + " " + fix(run.steps, 0) + (run.budget ? " of at most " + fix(run.budget, 0) : "");
  setText("run-summary", run.plan_name + " run " + short(run.uid) + " (" + run.status + ")" +
    (run.temperature_k !== null ? " at " + fix(run.temperature_k, 1) + " K" : "") + "; " + steps +
    (run.campaign ? "; campaign " + run.campaign : "") + (run.stop_reason ? "; stop: " + run.stop_reason : ""));
  fillRows("posterior-table", run.quantities || [], (q) => [
    el("td", q.quantity), num(sig(q.mean, 6) + " ± " + sig(q.std, 3), "posterior"), num(sig(q.target, 3), "target"),
    el("td", q.reached ? "yes" : "not yet", q.reached ? "ok" : ""),
  ]);
}

function candidates(d) {
  const cell = el("td");
  const details = el("details");
  details.appendChild(el("summary", d.top.length + " best of " + d.candidates));
  const list = el("ol");
  for (const c of d.top) {
    list.appendChild(el("li", fix(c.temperature_k, 1) + " K, ±" + sig(c.target_std, 3) + ": " + sig(c.score, 3)));
  }
  details.appendChild(list);
  cell.appendChild(details);
  return cell;
}

function renderCampaign(s) {
  const c = s.campaign;
  if (!c) {
    setText("campaign-summary", s.campaign_name ? "campaign " + s.campaign_name + ": no record in the catalog yet" :
      "no campaign watched", "muted");
    setText("tc", "–");
    setText("tc-target", "");
    setText("campaign-stop", "");
    fillRows("decisions-table", [], () => []);
    fillRows("observations-table", [], () => []);
    return;
  }
  setText("campaign-summary", "campaign " + c.name + ", record " + short(c.record_uid) + " (" + c.status + ", " +
    c.runs + " runs learnt from, " + c.decisions.length + " decisions" +
    (c.records > 1 ? " over " + c.records + " records" : "") + ")");
  setText("tc", c.tc_mean === null ? "no run yet" : fix(c.tc_mean, 1) + " ± " + fix(c.tc_std, 1) + " K",
    c.reached ? "ok" : "");
  setText("tc-target", c.target_tc_std_k !== null ? "(target ± " + sig(c.target_tc_std_k, 3) + " K" +
    (c.reached ? ": reached)" : ")") : "");
  setText("campaign-stop", c.stop_reason !== null && c.stop_reason !== undefined ? "stopped: " + c.stop_reason : "",
    "");
  fillRows("decisions-table", c.decisions, (d) => [
    num(d.decision), num(fix(d.temperature_k, 1), "chosen-t"), num(sig(d.target_std, 3), "chosen-std"),
    el("td", d.queued_temperature_k === null ? "nothing" : fix(d.queued_temperature_k, 1) + " K, ±" +
      sig(d.queued_target_std, 3)),
    num(fix(d.expected_cycles, 0)), num(fix(d.expected_cost_s === null ? null : d.expected_cost_s / 3600, 2)),
    num(fix(d.tc_std_now, 1) + " → " + fix(d.expected_tc_std_after, 1)),
    el("td", d.review + (d.review_note ? ": " + d.review_note : "")), el("td", d.reason), candidates(d),
  ]);
  fillRows("observations-table", c.observations, (o) => [
    el("td", short(o.run_uid)), num(fix(o.temperature_k, 1)), num(sig(o.mu_s_mean, 5) + " ± " + sig(o.mu_s_std, 3)),
    num(fix(o.cycles, 0)), num(fix(o.beamtime_s === null ? null : o.beamtime_s / 3600, 2)),
    num(fix(o.tc_mean, 1) + " ± " + fix(o.tc_std, 1)),
  ]);
}

function render(s) {
  document.title = "bayesbeam status" + (s.campaign_name ? ": " + s.campaign_name : "");
  setText("title", document.title);
  const errors = document.getElementById("errors");
  errors.replaceChildren(...(s.errors || []).map((e) => el("li", e)));
  renderQueue(s);
  renderRun(s);
  renderCampaign(s);
}

async function poll() {
  try {
    const response = await fetch("status.json", {cache: "no-store"});
    if (!response.ok) throw new Error("status.json answered " + response.status);
    const s = await response.json();
    render(s);
    lastOk = Date.now();
    polls += 1;
    document.body.dataset.polls = String(polls);
    setText("updated", "updated " + clock(s.time), "muted");
  } catch (err) {
    const age = lastOk ? " (last update " + Math.round((Date.now() - lastOk) / 1000) + " s ago)" : "";
    setText("updated", "the status server does not answer: " + err.message + age, "down stale");
  }
  window.setTimeout(poll, REFRESH_S * 1000);
}

document.getElementById("refresh").textContent = String(REFRESH_S);
poll();
