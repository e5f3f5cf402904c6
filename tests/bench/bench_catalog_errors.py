"""Time from launch to the error, for a command given a catalog it cannot use (issue 9, defect 9).

Protocol, fixed before looking: for each case, REPS fresh processes of ``bayesbeam rehearse compton --catalog
<location> --no-progress --time-scale inf`` (``bayesbeam runs`` for the missing catalog), each timed from launch
to exit; reported: the median and the range of all repetitions (none dropped), the exit status, how many lines
the process wrote to stderr, and the first of them. For reference, ``bayesbeam rehearse compton --help`` (Python
start-up and the command line's imports) is timed the same way. Cases:

- unwritable directory: an existing directory the user may not write (as ``nobody`` if run as root);
- read-only catalog: an existing catalog whose files and directories the user may not write (same);
- missing parent: ``/no/such/dir`` (a writer may not create a tree from a typo);
- runs on a missing catalog: ``bayesbeam runs --catalog /no/such/dir``;
- server refuses: a tiled URI on 127.0.0.1 where nothing listens;
- server silent: a tiled URI on 127.0.0.1 whose socket accepts connections and never answers (the client's
  timeout, ``bayesbeam.catalog.SERVER_TIMEOUT_S``).

    python tests/bench/bench_catalog_errors.py            # REPS = 5, about a minute on 2 cores
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPS = 5
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from unprivileged import without_write_override  # noqa: E402


def as_other_user() -> list[str]:
    prefix = without_write_override()
    if prefix is None:
        raise SystemExit("run as a normal user, or install setpriv (util-linux)")
    return prefix


def time_command(prefix: list[str], args: list[str], env: dict) -> tuple[float, int, list[str]]:
    t0 = time.perf_counter()
    out = subprocess.run([*prefix, sys.executable, "-m", "bayesbeam.cli", *args], capture_output=True, text=True,
                         cwd=ROOT, env=env, timeout=600)
    return time.perf_counter() - t0, out.returncode, out.stderr.strip().splitlines()


def main() -> None:
    base = Path(tempfile.mkdtemp(prefix="bench_catalog_errors_"))
    base.chmod(0o755)
    home = base / "home"
    home.mkdir()
    home.chmod(0o777)
    env = {**os.environ, "HOME": str(home), "MPLCONFIGDIR": str(home), "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("BAYESBEAM_CATALOG", None)
    other = as_other_user()
    (base / "unwritable").mkdir()
    (base / "unwritable").chmod(0o555)
    make = f"from bayesbeam.catalog import open_catalog; open_catalog({str(base / 'ro')!r})"
    subprocess.run([sys.executable, "-c", make], check=True, capture_output=True, cwd=ROOT)
    for path in [base / "ro", *(base / "ro").rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    refused = socket.socket()
    refused.bind(("127.0.0.1", 0))
    refused_port = refused.getsockname()[1]
    refused.close()  # nothing listens on it now
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # connections are accepted by the kernel, never answered
    rehearse = ["rehearse", "compton", "--no-progress", "--time-scale", "inf", "--figure", str(home / "f.png"),
                "--catalog"]
    cases = [
        ("--help (reference)", [], ["rehearse", "compton", "--help"]),
        ("unwritable directory", other, [*rehearse, str(base / "unwritable")]),
        ("read-only catalog", other, [*rehearse, str(base / "ro")]),
        ("missing parent", [], [*rehearse, "/no/such/dir"]),
        ("runs on a missing catalog", [], ["runs", "--catalog", "/no/such/dir"]),
        ("server refuses", [], [*rehearse, f"http://127.0.0.1:{refused_port}/api"]),
        ("server silent", [], [*rehearse, f"http://127.0.0.1:{silent.getsockname()[1]}/api"]),
    ]
    try:
        print(f"{'case':28s} {'median s':>9s} {'range s':>13s}  exit  stderr lines  first line")
        for label, prefix, args in cases:
            results = [time_command(prefix, args, env) for _ in range(REPS)]
            times = [r[0] for r in results]
            codes = sorted({r[1] for r in results})
            lines = sorted({len(r[2]) for r in results})
            first = results[-1][2][0] if results[-1][2] else ""
            print(f"{label:28s} {statistics.median(times):9.2f} {min(times):6.2f}-{max(times):<6.2f}  "
                  f"{','.join(map(str, codes)):>4s}  {','.join(map(str, lines)):>12s}  {first[:110]}")
    finally:
        silent.close()
        subprocess.run(["chmod", "-R", "u+rwx", str(base)])
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
