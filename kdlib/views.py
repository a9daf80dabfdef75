"""`load_run`: one run from the store, ready for analysis in a notebook or a script."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from kdlib.store import RunStore


@dataclass
class LoadedRun:
    run_id: str
    store: RunStore

    @property
    def info(self) -> dict:
        return self.store.run(self.run_id)

    @property
    def config(self):
        return self.store.config(self.run_id)

    @property
    def metrics(self) -> pd.DataFrame:
        """One row per epoch, one column per scalar."""
        return self.store.epoch_metrics(self.run_id)

    @property
    def epochs(self) -> list[int]:
        """Epochs that have per-sample values."""
        return self.store.per_sample_epochs(self.run_id)

    def samples(self, epoch: int = -1, split: str = "train") -> pd.DataFrame:
        """Per-sample values of one epoch (default: the last), one row per dataset index."""
        epochs = self.epochs
        if not epochs:
            raise KeyError(f"run {self.run_id} has no per-sample values yet")
        epoch = epochs[epoch] if epoch < 0 else epoch
        arrays = self.store.per_sample(self.run_id, epoch, split)
        return pd.DataFrame({k: v.astype(float) if v.dtype.kind == "f" else v for k, v in arrays.items()}).rename_axis(
            "index"
        )

    def trajectory(self, index: int, key: str = "p_true_student", split: str = "train") -> pd.Series:
        return self.store.trajectory(self.run_id, key, index, split)


def load_run(run_id: str | None = None, home: str | Path | None = None) -> LoadedRun:
    """A run by id (default: the latest student run in the store)."""
    store = RunStore(home)
    run_id = run_id or store.latest_run_id()
    store.run(run_id)
    return LoadedRun(run_id, store)
