"""Receive-side accounting of generated traffic: loss, reordering, duplicates, latency.

All of it is per burst and vectorised. A bitmap indexed by sequence number says which frames
arrived (duplicates are frames whose bit was already set); a frame is *reordered* when a higher
sequence number arrived before it. Latency samples (receive time minus the send time in the
signature) are kept in full up to a cap, then decimated, so percentiles stay exact for runs of
a few million frames and representative beyond.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

LATENCY_CAP = 1 << 21


@dataclass
class RxStats:
    received: int = 0  # frames with our signature, duplicates included
    bytes: int = 0
    others: int = 0  # frames without it
    duplicates: int = 0
    reordered: int = 0
    highest: int = -1
    _seen: np.ndarray = field(default_factory=lambda: np.zeros(1 << 16, np.uint8))
    _lat: np.ndarray = field(default_factory=lambda: np.empty(LATENCY_CAP, np.int64))
    _nlat: int = 0
    _keep_every: int = 1
    _lat_tick: int = 0

    def add(self, seqs: np.ndarray, sent_ns: np.ndarray, now_ns: int, nbytes: int, others: int) -> None:
        self.others += others
        n = len(seqs)
        if n == 0:
            return
        self.received += n
        self.bytes += nbytes
        s = seqs.astype(np.int64)
        top = int(s.max())
        if top >= len(self._seen):
            grown = np.zeros(max(top + 1, 2 * len(self._seen)), np.uint8)
            grown[: len(self._seen)] = self._seen
            self._seen = grown
        # Duplicates: already seen before this burst, or repeated inside it.
        uniq = np.unique(s)
        self.duplicates += int(self._seen[uniq].sum()) + (n - len(uniq))
        self._seen[uniq] = 1
        running = np.maximum.accumulate(np.concatenate(([self.highest], s)))[:-1]
        self.reordered += int((s < running).sum())
        self.highest = max(self.highest, top)
        self._add_latency(np.int64(now_ns) - sent_ns.astype(np.int64))

    def _add_latency(self, lat: np.ndarray) -> None:
        if self._keep_every > 1:
            idx = (self._lat_tick + np.arange(len(lat))) % self._keep_every == 0
            self._lat_tick += len(lat)
            lat = lat[idx]
        room = LATENCY_CAP - self._nlat
        if len(lat) > room:
            # Full: keep every other sample from now on, and halve what is stored.
            kept = self._lat[: self._nlat : 2].copy()
            self._nlat = len(kept)
            self._lat[: self._nlat] = kept
            self._keep_every *= 2
            lat = lat[::2]
            room = LATENCY_CAP - self._nlat
            lat = lat[:room]
        self._lat[self._nlat : self._nlat + len(lat)] = lat
        self._nlat += len(lat)

    @property
    def unique(self) -> int:
        return self.received - self.duplicates

    def lost(self, sent: int | None) -> int:
        """Frames never received: of ``sent`` if known, else of those up to the highest seen."""
        expected = sent if sent is not None else self.highest + 1
        return max(expected - self.unique, 0)

    def latency(self) -> dict[str, float] | None:
        """min/median/p99/max/mean in microseconds, or None without samples."""
        if self._nlat == 0:
            return None
        lat = self._lat[: self._nlat]
        q = np.percentile(lat, [50, 99])
        return {
            "samples": int(self._nlat),
            "min_us": round(float(lat.min()) / 1000, 3),
            "median_us": round(float(q[0]) / 1000, 3),
            "p99_us": round(float(q[1]) / 1000, 3),
            "max_us": round(float(lat.max()) / 1000, 3),
            "mean_us": round(float(lat.mean()) / 1000, 3),
        }

    def summary(self, sent: int | None) -> dict[str, Any]:
        return {
            "received": self.received,
            "unique": self.unique,
            "lost": self.lost(sent),
            "duplicates": self.duplicates,
            "reordered": self.reordered,
            "other_frames": self.others,
            "rx_bytes": self.bytes,
            "latency": self.latency(),
        }
