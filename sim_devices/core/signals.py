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


class ImageSignal(Signal):
    """A Signal holding a 2-D array, described as such (shape [rows, cols], its numpy dtype; DESIGN §8)."""

    def describe(self):
        d = super().describe()
        value = np.asarray(self._readback)
        d[self.name].update(dtype="array", shape=list(value.shape), dtype_numpy=value.dtype.str)
        return d


class ElapsedSignal(Signal):
    """The elapsed time of a device's last count (s), read with every reading as ``<device>_elapsed_s``:
    0 while a count runs and after one that failed, the count's own duration once it finished."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, value=0.0, **kwargs)

    def describe(self):
        d = super().describe()
        d[self.name].update(units="s", precision=3)
        return d


class CountsSignal(Signal):
    """A count (photons, monitor counts) held as a float but described with ``precision`` 0, so a live table
    prints ``47458``, not ``47458.000`` (a scaler record's PREC does the same over EPICS)."""

    def describe(self):
        d = super().describe()
        d[self.name].update(precision=0, units="counts")
        return d
