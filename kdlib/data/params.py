"""Parameters every dataset shares: how its pool is cut into train/val/test."""

from __future__ import annotations

from pydantic import Field

from kdlib.spec import MAX_SEED, Spec


class SplitParams(Spec):
    val_fraction: float = Field(0.1, ge=0, lt=1, description="share of the samples held out for validation")
    test_fraction: float = Field(0.2, ge=0, lt=1, description="share of the samples held out for testing")
    split_seed: int = Field(
        0,
        ge=0,
        le=MAX_SEED,
        description="seed of the train/val/test partition; kept apart from the run's seed "
        "so that runs with different seeds see the same test samples",
    )
