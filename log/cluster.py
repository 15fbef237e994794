"""What a log node keeps about itself: its cluster id and the producer ids it has handed out.

Stored in ``<root>/cluster.json``. Producer ids are reserved in blocks, the block written
durably before any id in it is handed out, so an id is never reused after a crash: a
reused id would meet the old producer's sequence numbers in the log and be refused.
"""

from __future__ import annotations

import threading
import uuid

from .fs import Filesystem, read_json_object, write_json

__all__ = ["ClusterState"]

PRODUCER_ID_BLOCK_SIZE = 1000


class ClusterState:
    def __init__(self, fs: Filesystem, root: str) -> None:
        self._fs = fs
        self._path = f"{root}/cluster.json"
        self._lock = threading.Lock()
        stored = read_json_object(fs, self._path) or {}
        cluster_id = stored.get("cluster_id")
        self.cluster_id = cluster_id if isinstance(cluster_id, str) else _new_cluster_id()
        reserved = stored.get("producer_ids_reserved_until", 0)
        # Ids below the stored mark may have been handed out before a crash: start past it.
        self._next_producer_id = reserved if isinstance(reserved, int) and reserved >= 0 else 0
        self._reserved_until = self._next_producer_id
        self._save()

    def next_producer_id(self) -> int:
        with self._lock:
            if self._next_producer_id >= self._reserved_until:
                self._reserved_until = self._next_producer_id + PRODUCER_ID_BLOCK_SIZE
                self._save()
            producer_id = self._next_producer_id
            self._next_producer_id += 1
            return producer_id

    def _save(self) -> None:
        write_json(
            self._fs,
            self._path,
            {"cluster_id": self.cluster_id, "producer_ids_reserved_until": self._reserved_until},
        )


def _new_cluster_id() -> str:
    # Kafka's cluster ids are 22 characters of URL-safe base64 of a UUID; any string works.
    return "streamer-" + uuid.uuid4().hex[:13]
