"""Wiring: catalog, RunEngine session, EPICS devices, rehearsals and the command line."""

from agent.core.names import alias_moved_modules

alias_moved_modules({
    "bayesbeam.rehearse_compton": "bayesbeam.rehearsal.compton.rehearse",
    "bayesbeam.report_compton": "bayesbeam.rehearsal.compton.report",
    "bayesbeam.rehearse_xas": "bayesbeam.rehearsal.xas.rehearse",
    "bayesbeam.rehearse_xps": "bayesbeam.rehearsal.xps.rehearse",
})
