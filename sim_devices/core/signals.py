"""Signals shared by the simulated detectors."""

import numpy as np
from ophyd import Signal


class ArraySignal(Signal):
    """A Signal holding a 1-D array, described as such (DESIGN §8)."""

    def __init__(self, *args, length: int, dtype: str = "<i8", **kwargs):
        super().__init__(*args, value=np.zeros(length, dtype=dtype), **kwargs)
        self._length, self._dtype = length, dtype

    def describe(self):
        d = super().describe()
        d[self.name].update(dtype="array", shape=[self._length], dtype_numpy=self._dtype)
        return d
