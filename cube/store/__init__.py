"""Key-value stores by namespace: LevelDB (default) and memory (tests). Values are msgpack."""
from cube.store.base import Store, StoreError, open_store

__all__ = ["Store", "StoreError", "open_store"]
