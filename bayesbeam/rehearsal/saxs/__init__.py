"""saxs rehearsal: options (options.py), simulation and run (rehearse.py), report (report.py), command (cli.py)."""
