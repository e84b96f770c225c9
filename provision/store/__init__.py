"""The server's records in SQLite: ``Store`` (``db``), the typed records (``records``), the schema (``schema``).

The rules the records follow (machine and run states, allowed moves, ``done`` only when verified) are
``provision.states``; the store enforces them in its transactions.
"""

from provision.store.db import Store, StoreUnavailable
from provision.store.records import ErasureRecord, Event, Machine, Run, Verification
from provision.store.schema import MIGRATIONS

__all__ = ["MIGRATIONS", "ErasureRecord", "Event", "Machine", "Run", "Store", "StoreUnavailable", "Verification"]
