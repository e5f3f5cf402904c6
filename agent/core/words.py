"""How names and numbers appear in messages to a user: a name looked up in any case, with the close
names suggested on a miss, and numbers shown as numbers (``8000.0``, not ``np.float64(8000.0)``)."""

import difflib
import numbers
from collections.abc import Iterable


def one_of(name, known: Iterable[str], what: str) -> str:
    """The entry of ``known`` that ``name`` is, ignoring case and surrounding spaces (its stored form:
    ``"la2o3"`` → ``"La2O3"``). Else ``ValueError("unknown <what> 'x'; did you mean A, B?")`` naming
    the close entries, or all of them (``"known <what>s: …"``) when none is close."""
    known = tuple(known)
    key = name.strip().casefold() if isinstance(name, str) else None
    for entry in known:
        if entry.casefold() == key:
            return entry
    raise ValueError(f"unknown {what} {plain(name)}; {suggestion(name, known, what + 's')}")


def suggestion(name, known: Iterable[str], plural: str = "") -> str:
    """``"did you mean A, B?"`` (the entries of ``known`` close to ``name``, any case), else
    ``"known <plural>: <all of them>"``."""
    known = tuple(known)
    by_key = {entry.casefold(): entry for entry in known}
    key = name.strip().casefold() if isinstance(name, str) else ""
    close = difflib.get_close_matches(key, by_key, n=3, cutoff=0.6)
    if close:
        return f"did you mean {', '.join(by_key[c] for c in close)}?"
    return f"known {plural}: {', '.join(known)}" if plural else f"known: {', '.join(known)}"


def plain(value) -> str:
    """``value`` as a message shows it: numbers (numpy's too) as Python prints them, strings quoted."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return repr(float(value))
    return repr(value)
