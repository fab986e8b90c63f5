"""What this node offers the mesh: its memory for model layers, capped and switchable."""

from __future__ import annotations

from dataclasses import dataclass

GIB = 1024 ** 3


@dataclass
class Offer:
    measured_bytes: int              # what the machine could give a model
    cap_bytes: int | None = None     # the user's cap (--max-vram, the desktop slider)
    donating: bool = True            # the tray's "Donate spare capacity" toggle
    client: bool = False             # a lite client offers nothing, ever

    @property
    def capacity_bytes(self) -> int:
        if self.client or not self.donating:
            return 0
        return self.measured_bytes if self.cap_bytes is None else min(self.measured_bytes, self.cap_bytes)

    def host_bytes(self) -> int:
        """The memory a model this node hosts may fill, KV caches too: the slider's cap applies,
        the donating toggle does not (a model the user asked this node to run runs)."""
        return self.measured_bytes if self.cap_bytes is None else min(self.measured_bytes, self.cap_bytes)

    def set_cap_gigabytes(self, gigabytes: float | None) -> None:
        if gigabytes is not None and not 0 <= gigabytes < 1e6:
            raise ValueError(f"a capacity cap is between 0 and 1000000 GB, not {gigabytes}")
        self.cap_bytes = None if gigabytes is None else int(gigabytes * GIB)

    def to_dict(self) -> dict:
        return {"measured_bytes": self.measured_bytes, "cap_bytes": self.cap_bytes,
                "donating": self.donating, "capacity_bytes": self.capacity_bytes}
