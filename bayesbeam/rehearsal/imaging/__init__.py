"""XAS-imaging rehearsal (issue 15): options (options.py), simulation and run (rehearse.py), report (report.py),
the commands (cli.py: ``rehearse xas-imaging``, ``classify``, ``imaging-stack``) and the HDF5 stack (stack.py)."""
