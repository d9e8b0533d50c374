"""Snapshot storage for checkpointed chains: RAM slots and a disk level.

A schedule (see :mod:`tracegrad.checkpoint.schedule`) names *slots*; this
module holds the states in them. A state is a flat list of leaves (arrays and
Python scalars). Each slot gets its buffers the first time it is written and
reuses them for every later snapshot (``np.copyto``), so a long reversal does
not churn the allocator and the memory held never exceeds the slot count.

Slots ``1 .. disk_slots`` may live on disk, as ``.npy`` files written with
``np.lib.format.open_memmap`` (the ``np.save`` format; never pickle). The
earliest-numbered slots are the long-lived ones in a binomial schedule
(restored rarely), which is why they are the ones moved out of RAM. Leaves
that are not plain numeric arrays (Python scalars, object arrays) always stay
in RAM; they are tiny or cannot be written without pickle.

State 0 of a chain (its *root*) is kept apart from the slots: a chain must be
able to re-run itself from the root after a reversal has released every slot
(a second backward walk, ``vjp_fn`` called twice), so a snapshot of state 0
only records that its slot refers to the root.
"""
import os
import re
import shutil
import tempfile
import weakref

import numpy as np

__all__ = ["parse_bytes", "state_nbytes", "SnapshotStore"]

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9,
          "gb": 10**9, "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30,
          "tib": 2**40}


def parse_bytes(size):
    """A byte count from an int or a string such as ``"256MB"`` or ``"1.5 GiB"``.

    Examples
    --------
    >>> parse_bytes("256MB"), parse_bytes("2 KiB"), parse_bytes(1000)
    (256000000, 2048, 1000)
    """
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        if size < 0:
            raise ValueError(f"a memory size must be >= 0, got {size}")
        return int(size)
    if isinstance(size, float) and size >= 0:
        return int(size)
    if isinstance(size, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", size)
        if m and m.group(2).lower() in _UNITS:
            return int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    raise ValueError(f"cannot read {size!r} as a memory size; use an int (bytes) or a string "
                     f"such as '256MB', '1.5GB' or '512 MiB'")


def state_nbytes(leaves):
    """Bytes one snapshot of ``leaves`` occupies (arrays by size, scalars as 8)."""
    total = 0
    for x in leaves:
        total += x.nbytes if isinstance(x, np.ndarray) else 8
    return total


def _on_disk(x):
    return isinstance(x, np.ndarray) and x.dtype.kind in "biufc" and x.dtype.isnative


class SnapshotStore:
    """States by slot number, with the root (state 0) held apart.

    Parameters
    ----------
    nslots : int
        Slots the schedule may use; slot numbers lie in ``range(nslots)``.
    disk_slots : int
        Slots ``1 .. disk_slots`` keep their arrays on disk.
    disk_dir : str, optional
        Folder for the disk level; a fresh temporary folder inside it (or
        inside the system's temporary folder) is removed with the store.
    stats : object, optional
        Receives ``snapshots_taken``, ``restores``, ``bytes_held``,
        ``peak_bytes``, ``disk_bytes_written`` and ``disk_bytes_read``
        increments.
    """

    def __init__(self, nslots, disk_slots=0, disk_dir=None, stats=None):
        self.nslots = nslots
        self.disk_slots = max(0, min(int(disk_slots), nslots - 1))
        self._disk_parent = disk_dir
        self._dir = None
        self._finalizer = None
        self._root = None
        self._buf = {}          # slot -> list of buffers (ndarray, memmap or scalar)
        self._full = {}         # slot -> step held, or absent
        self._is_root = set()   # slots whose content is the root
        self.stats = stats
        self.bytes = 0          # bytes allocated (RAM and disk)
        self.ram_bytes = 0
        self.disk_bytes = 0

    # --- root ---------------------------------------------------------------
    def set_root(self, leaves):
        """Copy ``leaves`` as the chain's state 0."""
        self._root = [np.array(x, copy=True) if isinstance(x, np.ndarray) else x for x in leaves]
        self._account(state_nbytes(self._root), disk=False)

    def root(self):
        """A private copy of the root state."""
        return [x.copy() if isinstance(x, np.ndarray) else x for x in self._root]

    # --- slots ----------------------------------------------------------------
    def put(self, slot, step, leaves):
        """Store ``leaves`` (state ``step``) in ``slot``; state 0 refers to the root."""
        if slot in self._full:
            raise RuntimeError(f"snapshot slot {slot} still holds state {self._full[slot]}")
        self._full[slot] = step
        if step == 0:
            self._is_root.add(slot)
            return
        bufs = self._buf.get(slot)
        if bufs is None or not self._fits(bufs, leaves):
            if bufs is not None:
                self._release(slot)
            bufs = self._buf[slot] = self._allocate(slot, leaves)
        disk = 0
        for i, x in enumerate(leaves):
            b = bufs[i]
            if isinstance(b, np.ndarray):
                np.copyto(b, x)
                if isinstance(b, np.memmap):
                    disk += b.nbytes
            else:
                bufs[i] = x
        st = self.stats
        if st is not None:
            st.snapshots_taken += 1
            st.disk_bytes_written += disk

    def get(self, slot):
        """A private copy of the state held in ``slot``."""
        if slot not in self._full:
            raise RuntimeError(f"snapshot slot {slot} is empty")
        st = self.stats
        if st is not None:
            st.restores += 1
        if slot in self._is_root:
            return self.root()
        out = []
        disk = 0
        for b in self._buf[slot]:
            if isinstance(b, np.ndarray):
                if isinstance(b, np.memmap):
                    disk += b.nbytes
                out.append(np.array(b, copy=True))
            else:
                out.append(b)
        if st is not None:
            st.disk_bytes_read += disk
        return out

    def free(self, slot):
        """Mark ``slot`` free; its buffers are kept for the next snapshot."""
        self._full.pop(slot, None)
        self._is_root.discard(slot)

    def used(self):
        """Slots currently holding a state."""
        return dict(self._full)

    def release(self):
        """Drop every slot buffer (the root stays)."""
        for slot in list(self._buf):
            self._release(slot)
        self._full.clear()
        self._is_root.clear()

    def close(self):
        """Drop everything, the disk folder included."""
        self.release()
        if self._root is not None:
            self._account(-state_nbytes(self._root), disk=False)
            self._root = None
        if self._finalizer is not None:
            self._finalizer()
            self._finalizer = None
            self._dir = None

    # --- internals ----------------------------------------------------------------
    @staticmethod
    def _fits(bufs, leaves):
        if len(bufs) != len(leaves):
            return False
        for b, x in zip(bufs, leaves):
            if isinstance(b, np.ndarray) != isinstance(x, np.ndarray):
                return False
            if isinstance(b, np.ndarray) and (b.shape != x.shape or b.dtype != x.dtype):
                return False
        return True

    def _disk_dir(self):
        if self._dir is None:
            parent = self._disk_parent
            if parent is not None:
                os.makedirs(parent, exist_ok=True)
            self._dir = tempfile.mkdtemp(prefix="tracegrad-snapshots-", dir=parent)
            self._finalizer = weakref.finalize(self, shutil.rmtree, self._dir, True)
        return self._dir

    def _allocate(self, slot, leaves):
        on_disk = 1 <= slot <= self.disk_slots
        bufs = []
        ram = disk = 0
        for i, x in enumerate(leaves):
            if not isinstance(x, np.ndarray):
                bufs.append(x)
                continue
            if on_disk and _on_disk(x):
                path = os.path.join(self._disk_dir(), f"slot{slot}_leaf{i}.npy")
                b = np.lib.format.open_memmap(path, mode="w+", dtype=x.dtype, shape=x.shape)
                disk += b.nbytes
            else:
                b = np.empty_like(x, order="C")
                ram += b.nbytes
            bufs.append(b)
        self._account(ram, disk=False)
        self._account(disk, disk=True)
        return bufs

    def _release(self, slot):
        bufs = self._buf.pop(slot)
        ram = disk = 0
        for b in bufs:
            if isinstance(b, np.memmap):
                disk += b.nbytes
                fname = b.filename
                del b
                try:
                    os.remove(fname)
                except OSError:
                    pass
            elif isinstance(b, np.ndarray):
                ram += b.nbytes
        self._account(-ram, disk=False)
        self._account(-disk, disk=True)

    def _account(self, nbytes, disk):
        if not nbytes:
            return
        self.bytes += nbytes
        if disk:
            self.disk_bytes += nbytes
        else:
            self.ram_bytes += nbytes
        st = self.stats
        if st is not None:
            st._held(nbytes, disk)
