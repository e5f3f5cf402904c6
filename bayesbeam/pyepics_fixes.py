"""A workaround for pyepics 3.5 that unattended sessions need: a read refused by libca never blocks the PV.

``epics.ca.get_with_metadata`` marks a read of a channel pending before it asks libca for it. If libca refuses
the request (the IOC's connection died in between: ``CASeverityException: get returned 'Virtual circuit
disconnect'``), the mark stays, no callback ever clears it, and every later read of that PV in the process
times out although the channel reconnects (seen after an IOC restart in the fault-soak benchmark:
``SIM08W:XAS:scaler1.TP`` unreadable for good, every later XAS run failed). ``install()`` wraps the function so
that the mark is cleared when the request raised; the exception still reaches the caller.
"""

from __future__ import annotations

import functools


def install() -> None:
    """Wrap ``epics.ca.get_with_metadata`` (once per process)."""
    from epics import ca

    original = ca.get_with_metadata
    if getattr(original, "_bayesbeam_clears_pending", False):
        return

    @functools.wraps(original)
    def get_with_metadata(chid, ftype=None, count=None, wait=True, timeout=None, as_string=False, as_numpy=True):
        try:
            return original(chid, ftype=ftype, count=count, wait=wait, timeout=timeout, as_string=as_string,
                            as_numpy=as_numpy)
        except (ca.CASeverityException, ca.ChannelAccessException):
            _clear_pending(ca, chid, ftype)
            raise

    get_with_metadata._bayesbeam_clears_pending = True
    ca.get_with_metadata = get_with_metadata


def _clear_pending(ca, chid, ftype) -> None:
    """Forget a read of ``chid`` that libca refused: no callback will ever complete it."""
    try:
        entry = ca.get_cache(ca.name(chid))
        ftype = ca.field_type(chid) if ftype is None else ftype
    except ca.ChannelAccessException:
        return
    if entry is None:
        return
    with entry.lock:
        if entry.get_results.get(ftype) == [ca.GET_PENDING]:
            entry.get_results[ftype] = [None]
