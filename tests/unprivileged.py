"""Test helper: the command prefix that runs a process without the power to write where permissions forbid it."""

from __future__ import annotations

import os
import shutil


def without_write_override() -> list[str] | None:
    """``[]`` for a normal user (permissions already bind it). For root: ``setpriv`` dropping every capability
    (CAP_DAC_OVERRIDE above all) while staying uid 0, so the process still reads this interpreter and
    virtual environment wherever they are (CI's venv sits in a 0700 ``mktemp -d``, which another uid cannot
    enter) but mode bits now bind it. ``None`` if root has no ``setpriv`` (util-linux)."""
    if os.geteuid() != 0:
        return []
    if not shutil.which("setpriv"):
        return None
    return ["setpriv", "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all", "--"]
