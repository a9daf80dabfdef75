"""RunStore: where runs write what they learn and where every view reads it.

One SQLite file in WAL mode (`$KDLIB_HOME/store.sqlite`, default `./runs`) holds the runs (config,
status, times, error, control flag), their scalar metrics (with the time each was produced), their
events and a registry of their per-sample arrays; a folder per run holds the arrays themselves (one
file per epoch, `samples/epoch_XXXX.safetensors`, written under a temporary name and renamed, then
registered with each array's dtype, shape and data offset, so a reader never sees half an epoch
and reads one sample's trajectory with one small read per epoch), checkpoints and route weights. Readers open their own
connection per call, so they work from any process or thread while a writer is running.

    runs.py         the database: its schema, and RunStore's runs, events and scalars
    control.py      RunStore's pause, resume and stop flags, runs bound together, what a run allows now
    samples.py      RunStore's per-sample arrays: their registry and their epoch files in the run's folder
    studies.py      RunStore's record of sweeps (kdlib.sweep): which run is which trial of which study
    epoch_files.py  the epoch file format (safetensors; older stores' `.kda`): writing, its index, reading one row
    sink.py         StoreSink: a run's events written from a background thread
"""

from kdlib.store.epoch_files import EPOCH_FILE_MAGIC, compact, read_epoch_index, write_epoch_file
from kdlib.store.control import ControlRefused
from kdlib.store.runs import ACTIVE, SCHEMA, RunNotFound, RunStore, StoreError
from kdlib.store.sink import StoreSink

__all__ = [
    "ACTIVE",
    "ControlRefused",
    "EPOCH_FILE_MAGIC",
    "SCHEMA",
    "RunNotFound",
    "RunStore",
    "StoreError",
    "StoreSink",
    "compact",
    "read_epoch_index",
    "write_epoch_file",
]
