"""The control room's status page in a real headless browser (Debian's chromium and chromium-driver, through
selenium), against the session's real queue stack and catalog: served by ``bayesbeam campaign run
--status-port 0`` while a reviewed 2-run campaign on the time-scaled simulator runs (the page follows it
without a reload), then by the standalone ``bayesbeam campaign status-page`` (the finished campaign, a running
plan's live posterior, the queue). What is asserted is what a person sees, rendered by the page's script."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from caioc import free_ports
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = "/usr/bin/chromedriver" if os.path.exists("/usr/bin/chromedriver") else shutil.which("chromedriver")

pytestmark = pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                                reason="chromium and chromium-driver not installed (bash .ci/system-packages)")


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.binary_location = CHROMIUM
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def js_number(x: float, digits: int) -> str:
    """``x`` to ``digits`` significant digits as the page writes it (JavaScript's ``String(Number(x.toPrecision(d)))``:
    positional notation, no trailing zeros)."""
    return np.format_float_positional(float(f"{x:.{digits}g}"), trim="-")


def text(driver, css: str) -> str:
    """The visible text of the element ``css``, read in one script (the page re-renders every refresh: elements
    found first and read afterwards can be gone by then, StaleElementReferenceException)."""
    return driver.execute_script("return document.querySelector(arguments[0]).innerText.trim();", css)


def rows(driver, table: str) -> list[list[str]]:
    """The visible cell texts of ``table``'s body, row by row, read in one script (see ``text``)."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0])).map("
        "tr => Array.from(tr.querySelectorAll('td')).map(td => td.innerText.trim()));", f"#{table} tbody tr")


def wait_page(driver, condition, what: str, timeout: float = 90.0):
    """Until ``condition(driver)`` is truthy (its value), re-checked as the page's script re-renders."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.2, ignored_exceptions=(
            StaleElementReferenceException,)).until(condition)
    except Exception:
        pytest.fail(f"the page never showed {what}; it shows:\n{driver.find_element('tag name', 'body').text}")


def browser_fetch(driver, url: str, method: str) -> int:
    """The status code the page's own ``fetch`` gets for ``method`` on ``url``."""
    return driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch(arguments[0], {method: arguments[1], body: 'x'}).then(r => done(r.status), e => done(-1));",
        url, method)


def http(url: str, method: str = "GET", host: str | None = None) -> int:
    request = urllib.request.Request(url, method=method, data=b"x" if method in ("POST", "PUT") else None)
    if host:
        request.add_header("Host", host)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


class Program:
    """A ``bayesbeam`` command in its own process, its stdout collected line by line (stderr to a file)."""

    def __init__(self, args: list[str], log: Path):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        self.log, self.lines = log, []
        self.proc = subprocess.Popen([sys.executable, "-m", "bayesbeam.cli", *args], stdout=subprocess.PIPE,
                                     stderr=open(log, "w"), text=True, cwd=ROOT, env=env)
        self._reader = threading.Thread(target=lambda: self.lines.extend(iter(self.proc.stdout.readline, "")),
                                        daemon=True)
        self._reader.start()

    def output(self) -> str:
        return "".join(self.lines) + self.log.read_text()[-3000:]

    def url(self, timeout: float = 120.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [line.split("status page: ", 1)[1].strip() for line in list(self.lines)
                     if line.startswith("status page: ")]
            if found:
                return found[0]
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        pytest.fail(f"no status page URL printed:\n{self.output()}")

    def wait(self, timeout: float) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            pytest.fail(f"{self.proc.args[3:5]} did not end within {timeout:g} s:\n{self.output()}")
        self._reader.join(timeout=10)
        return code

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


def proposal(name: str, state: Path, n: int, program: Program) -> dict:
    from bayesbeam.campaign.review import proposals

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        found = proposals(name, state)
        if len(found) >= n:
            return found[n - 1]
        if program.proc.poll() is not None:
            break
        time.sleep(0.1)
    pytest.fail(f"no proposal {n}:\n{program.output()}")


@pytest.fixture(scope="module")
def campaign(stack, browser, tmp_path_factory):
    """A 2-run campaign (``max_runs = 2``: two decisions) run with ``--review --status-port 0``; at each proposal
    the page it serves, opened once and never reloaded, is captured as a person sees it, then the proposal is
    approved. Returns the campaign's JSON result, what the page showed, and its answers to other methods."""
    from bayesbeam.cli import main

    directory = tmp_path_factory.mktemp("status_campaign")
    config = directory / "status.toml"
    config.write_text('[campaign]\nname = "fe_curie_status"\nmax_runs = 2\n'
                      '[design]\ntarget_stds_mub = [0.03, 0.05]\n')
    out = directory / "curie.json"
    program = Program(["campaign", "run", str(config), "--state-dir", str(stack.state), "--review",
                       "--status-port", "0", "--json", str(out)], directory / "campaign.log")
    seen = SimpleNamespace(config=config, program=program, shown={})
    try:
        seen.url = program.url()
        browser.get(seen.url + "?refresh=0.5")
        for n in (1, 2):
            proposal("fe_curie_status", stack.state, n, program)
            wait_page(browser, lambda d, n=n: f"{n - 1} decisions" in text(d, "#campaign-summary")
                      and len(rows(d, "observations-table")) == n - 1, f"{n - 1} decisions and observations")
            seen.shown[n] = {key: text(browser, f"#{key}") for key in (
                "title", "manager-state", "running-item", "queue-empty", "tc", "tc-target", "campaign-summary")}
            seen.shown[n].update(decisions=rows(browser, "decisions-table"),
                                 observations=rows(browser, "observations-table"))
            if n == 1:
                seen.refused = {m: browser_fetch(browser, seen.url + "status.json", m) for m in ("POST", "PUT")}
                seen.refused["DELETE"] = http(seen.url, "DELETE")
                seen.polls = int(browser.find_element("tag name", "body").get_attribute("data-polls"))
            result = CliRunner().invoke(main, ["campaign", "approve", str(config), str(n), "--state-dir",
                                               str(stack.state)])
            assert result.exit_code == 0, result.output
        seen.exit_code = program.wait(timeout=240)
        seen.gone = wait_page(browser, lambda d: "does not answer" in text(d, "#updated") and text(d, "#updated"),
                              "that its server is gone", timeout=30)
        seen.result = json.loads(out.read_text())
        seen.stdout = "".join(program.lines)
        yield seen
    finally:
        program.stop()


def test_the_campaign_serves_its_status_page_while_it_runs(campaign, stack):
    """The page the campaign agent serves follows it live: at proposal 1 an idle manager, an empty queue and no
    decision yet; at proposal 2 the first decision (the record's temperature and target std) and the T_c the
    first observation gave; other methods are refused; the campaign is unaffected and the page reports its
    server gone once the campaign has ended."""
    from bayesbeam.catalog import open_catalog

    first, second = campaign.shown[1], campaign.shown[2]
    assert campaign.exit_code == 0, campaign.program.output()
    assert campaign.stdout.count("status page: ") == 1 and campaign.url.startswith("http://127.0.0.1:")
    assert first["title"] == "bayesbeam status: fe_curie_status"
    assert first["manager-state"].startswith("manager idle (RE idle, environment open)")
    assert first["running-item"] == "running: nothing" and first["queue-empty"] == "the queue is empty"
    assert "0 runs learnt from, 0 decisions" in first["campaign-summary"] and first["tc"] == "no run yet"
    assert first["tc-target"] == "(target ± 5 K)" and first["decisions"] == [] and campaign.polls >= 1
    assert campaign.refused == {"POST": 405, "PUT": 405, "DELETE": 405}

    record = open_catalog(stack.catalog, writable=False)[campaign.result["record_uid"]]
    decisions, observations = record["decisions"].read(), record["observations"].read()
    assert decisions.sizes["time"] == 2 and campaign.result["runs"] == 2
    (row,) = second["decisions"]
    assert row[0] == "1" and row[1] == f"{float(decisions['temperature_k'][0]):.1f}"
    assert row[2] == js_number(float(decisions["target_std"][0]), 3) and row[7] == "approved"
    assert row[8] == str(decisions["reason"].values[0])
    (obs,) = second["observations"]
    tc = f"{float(observations['tc_mean'][0]):.1f} ± {float(observations['tc_std'][0]):.1f} K"
    assert second["tc"] == tc and obs[5] == tc[:-2] and obs[0] == str(observations["run_uid"].values[0])[:8]
    assert "1 runs learnt from, 1 decisions" in second["campaign-summary"]
    assert campaign.result["stop_reason"] == "budget: runs = 2 reached the limit 2"


def test_a_standalone_page_shows_the_campaign_the_queue_and_a_running_plan(campaign, stack, browser, tmp_path):
    """``bayesbeam campaign status-page``, watching the same manager and catalog: every decision of the record
    with its chosen temperature, T_c ± std as the runner reported it; then a plan queued behind a running one
    (its text shown as text, not as HTML), the running plan's cycles and posterior mean ± std of μs against its
    target, equal to the catalog's last posterior row once the plan is paused."""
    from bluesky_queueserver_api import BPlan

    from bayesbeam.catalog import open_catalog
    from bayesbeam.queue.stack import AGENTS_GROUP, wait_for_status

    result, catalog = campaign.result, open_catalog(stack.catalog, writable=False)
    decisions = catalog[result["record_uid"]]["decisions"].read()
    program = Program(["campaign", "status-page", str(campaign.config), "--state-dir", str(stack.state),
                       "--port", "0"], tmp_path / "page.log")
    api = stack.stack.api(user_group=AGENTS_GROUP, user="status page test")
    try:
        url = program.url()
        browser.get(url + "?refresh=0.5")
        shown = wait_page(browser, lambda d: len(rows(d, "decisions-table")) == 2 and rows(d, "decisions-table"),
                          "the record's two decisions")
        assert [r[1] for r in shown] == [f"{float(t):.1f}" for t in decisions["temperature_k"].values]
        assert [r[0] for r in shown] == ["1", "2"] and len(rows(browser, "observations-table")) == 2
        assert text(browser, "#tc") == f"{result['tc_mean']:.1f} ± {result['tc_std']:.1f} K"
        assert text(browser, "#campaign-stop") == f"stopped: {result['stop_reason']}"
        assert {m: browser_fetch(browser, url, m) for m in ("POST", "PUT")} == {"POST": 405, "PUT": 405}

        label = '<img id="injected" src="x">'
        api.item_add(BPlan("adaptive_compton", target_std=1e-6, max_cycles=1000, md={"sample": "fe"}))
        api.item_add(BPlan("adaptive_compton", target_std=0.05, max_cycles=1, md={"campaign": label}))
        api.queue_start()
        summary = wait_page(browser, lambda d: "; cycles " in text(d, "#run-summary") and int(
            text(d, "#run-summary").split("; cycles ")[1].split()[0]) >= 2 and text(d, "#run-summary"),
            "the running plan with 2 cycles")
        assert summary.startswith("adaptive_compton run ") and "(running)" in summary
        assert " of at most 1000" in summary  # the budget, read from the stored stop rule
        assert text(browser, "#running-item").startswith("running: adaptive_compton(target_std=1e-06, max_cycles=1000")
        (queued,) = rows(browser, "queue-table")
        assert queued[:2] == ["1", "adaptive_compton"] and queued[4] == label
        assert not browser.find_elements("id", "injected")  # the label is text, never markup

        api.re_pause(option="immediate")
        wait_for_status(api, lambda s: s["manager_state"] == "paused", timeout=60, what="the plan to pause")
        (uid,) = [r["uid"] for r in api.re_runs(option="open")["run_list"]]

        def stored():  # the catalog's last posterior row (its writer can be a moment behind the RunEngine)
            post = catalog[uid]["posterior"].read()
            return int(post["cycles"][-1]), float(post["mu_s_mean"][-1]), float(post["mu_s_std"][-1])

        def shows_the_stored_row(d):
            cycles, mean, std = stored()
            return (text(d, "#manager-state").startswith("manager paused")
                    and f"; cycles {cycles} of at most 1000" in text(d, "#run-summary")
                    and rows(d, "posterior-table") == [["mu_s", f"{js_number(mean, 6)} ± {js_number(std, 3)}",
                                                        "0.000001", "not yet"]])

        wait_page(browser, shows_the_stored_row, "the paused plan's last stored cycle and posterior")
        assert uid[:8] in text(browser, "#run-summary") and stored()[0] >= 2
        api.re_abort()
        wait_for_status(api, lambda s: s["manager_state"] == "idle", timeout=60, what="the plan to abort")
        api.queue_clear()
        wait_page(browser, lambda d: text(d, "#run-summary") == "no run open" and not rows(d, "queue-table"),
                  "the queue emptied")
        program.proc.send_signal(signal.SIGTERM)
        assert program.wait(timeout=30) == 0
    finally:
        api.close()
        program.stop()


def test_a_manager_that_does_not_answer_is_said_so(stack, browser, tmp_path):
    """A page whose manager does not answer says so in its queue section and still shows the catalog's part;
    a request naming another host (DNS rebinding) is refused; a campaign asked for a page on a port that is
    taken stops in one line before it queues anything."""
    from bayesbeam.campaign.status import StatusSource
    from bayesbeam.campaign.status_page import serve_status
    from bayesbeam.cli import main

    (port,) = free_ports(1)
    source = StatusSource(f"tcp://127.0.0.1:{port}", str(stack.catalog), "no_such_campaign", manager_timeout_s=0.3)
    source.open()  # in this thread, as the CLI does (see StatusSource.open)
    page = serve_status(source)
    try:
        browser.get(page.url + "?refresh=0.5")
        state = wait_page(browser, lambda d: text(d, "#manager-state"), "the manager's state")
        assert state.startswith(f"manager not answering at tcp://127.0.0.1:{port}")
        assert "down" in browser.find_element("id", "manager-state").get_attribute("class")
        assert text(browser, "#campaign-summary") == "campaign no_such_campaign: no record in the catalog yet"
        assert text(browser, "#errors") == "" and text(browser, "#run-summary") == "no run open"
        assert http(page.url + "status.json") == 200
        assert http(page.url + "status.json", host=f"attacker.example:{page.port}") == 403
        assert http(page.url + "nothing") == 404

        config = tmp_path / "busy.toml"
        config.write_text('[campaign]\nname = "fe_curie_busy_port"\nmax_runs = 1\n')
        history = stack.stack.status()["manager"]["items_in_history"]
        result = CliRunner().invoke(main, ["campaign", "run", str(config), "--state-dir", str(stack.state),
                                           "--status-port", str(page.port)])
        assert result.exit_code == 1 and result.output.strip().endswith(
            f"status page: cannot listen on 127.0.0.1:{page.port} (Address already in use)"), result.output
        assert stack.stack.status()["manager"]["items_in_history"] == history
    finally:
        page.close()
