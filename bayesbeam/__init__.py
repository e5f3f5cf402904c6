"""Wiring: catalog, RunEngine session, rehearsals and the command line."""
