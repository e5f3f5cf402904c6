"""Scores of a class map against a simulation's truth, from the confusion matrix alone (so a 4×10⁸-pixel map
is scored tile by tile): classes are matched to true phases, and the minority phase's pixel-level precision
and recall and the majority phases' accuracy follow."""

from __future__ import annotations

import numpy as np


def match_classes(confusion: np.ndarray) -> np.ndarray:
    """For each class row of ``confusion`` (C + 1 rows: classes then unclassified; columns: true phases), the
    true phase it holds most pixels of (−1 for the unclassified row and empty classes)."""
    conf = np.asarray(confusion)
    out = np.where(conf.sum(axis=1) > 0, conf.argmax(axis=1), -1)
    out[-1] = -1
    return out


def scores(confusion: np.ndarray, minority: int | None) -> dict:
    """``majority_accuracy``: the fraction of true majority-phase pixels labelled with a class matched to their
    phase; ``minority_precision`` / ``minority_recall``: of the pixels in classes matched to the ``minority``
    column (its index; None: no minority), the fraction truly minority, and of the true minority pixels, the
    fraction in those classes; ``minority_found``: some class is matched to the minority. Unclassified pixels
    count as wrong."""
    conf = np.asarray(confusion, np.int64)
    match = match_classes(conf)
    n_truth = conf.shape[1]
    correct = np.array([conf[match == p, p].sum() for p in range(n_truth)])
    total = conf.sum(axis=0)
    major = [p for p in range(n_truth) if p != minority]
    out = {"majority_accuracy": float(correct[major].sum() / max(total[major].sum(), 1)),
           "class_to_phase": match[:-1].tolist()}
    if minority is None:
        return out
    rows = match == minority
    labelled = int(conf[rows].sum())
    out.update({"minority_found": bool(rows.any()),
                "minority_precision": float(conf[rows, minority].sum() / labelled) if labelled else 0.0,
                "minority_recall": float(conf[rows, minority].sum() / max(total[minority], 1)),
                "minority_pixels": int(total[minority])})
    return out
