"""Rehearsals on the simulated beamline, one subpackage per technique (options, the run through the
RunEngine into the catalog and any planning statistics, the report, the command), over ``common``
(the --json file, subscribers, the RunEngine on a catalog location, shared option checks)."""
