"""Every Redis key name Cohort uses, and nothing else.

Keys of one partition share the hash tag ``{p:<n>}`` so that a partition lives on
one Redis Cluster slot and one Lua script may touch all of its keys. Keys that
are not partition-bound (gateway reply streams, the worker registry) carry no tag.
"""

from __future__ import annotations

import zlib


def partition_of(batch_id: str, partitions: int) -> int:
    """The partition a batch hashes to; stable across processes and versions."""
    return zlib.crc32(batch_id.encode()) % partitions


class Keys:
    """Key names under one prefix (tests use their own prefix to stay isolated)."""

    def __init__(self, prefix: str, partitions: int) -> None:
        if "{" in prefix or "}" in prefix:
            raise ValueError("the key prefix must not contain braces (hash tags)")
        self.prefix = prefix
        self.partitions = partitions

    def partition(self, batch_id: str) -> int:
        return partition_of(batch_id, self.partitions)

    def _p(self, partition: int) -> str:
        return f"{self.prefix}:{{p:{partition}}}"

    # Partition-wide keys.
    def commands(self, partition: int) -> str:
        """Stream of commands for the batches of this partition."""
        return f"{self._p(partition)}:cmds"

    def lease(self, partition: int) -> str:
        """The owning worker's id, with a TTL (PX)."""
        return f"{self._p(partition)}:lease"

    def epoch(self, partition: int) -> str:
        """Incremented on every takeover; appends carry it (fencing)."""
        return f"{self._p(partition)}:epoch"

    def cursor(self, partition: int) -> str:
        """ID of the last command fully handled (events appended or rejection recorded)."""
        return f"{self._p(partition)}:cursor"

    def batches(self, partition: int) -> str:
        """Set of the batch ids opened in this partition (so a new owner finds them all)."""
        return f"{self._p(partition)}:batches"

    def submitted(self, partition: int, sender: str) -> str:
        """The number of the last command-submit call one gateway's sender appended
        to this partition (Redis Cluster only): a call the client re-sends after a
        dropped connection appends nothing twice."""
        return f"{self._p(partition)}:sub:{sender}"

    # Per-batch keys (in the batch's partition).
    def events(self, batch_id: str) -> str:
        return f"{self._p(self.partition(batch_id))}:b:{batch_id}:events"

    def versions(self, batch_id: str) -> str:
        """Hash scope -> current version, checked and advanced by the append script."""
        return f"{self._p(self.partition(batch_id))}:b:{batch_id}:versions"

    def snapshots(self, batch_id: str) -> str:
        """Stream of snapshots; each entry's ID is the position of the last event it folds."""
        return f"{self._p(self.partition(batch_id))}:b:{batch_id}:snaps"

    def dedupe(self, batch_id: str, run_id: str) -> str:
        """Hash command id -> outcome for one run, with a TTL."""
        return f"{self._p(self.partition(batch_id))}:b:{batch_id}:r:{run_id}:dedupe"

    def study_session(self, batch_id: str, run_id: str) -> str:
        """Hash run-scope version -> study session JSON written at that version.

        Kept beside the stream so an abort can erase the contents while the
        events stay as markers (versions and positions unchanged).
        """
        return f"{self._p(self.partition(batch_id))}:b:{batch_id}:r:{run_id}:ss"

    def last_seen(self, batch_id: str) -> str:
        """Hash run id -> ms when a gateway last saw the participant."""
        return f"{self._p(self.partition(batch_id))}:b:{batch_id}:seen"

    # Keys outside partitions.
    def replies(self, gateway_id: str) -> str:
        """Capped stream of rejections and duplicate answers for one gateway process."""
        return f"{self.prefix}:gw:{gateway_id}:replies"

    def workers(self) -> str:
        """Sorted set worker id -> last heartbeat (ms), used to size fair shares."""
        return f"{self.prefix}:workers"

    def finalizer_heartbeat(self) -> str:
        """The finalizer's clock in ms, expiring: present while a finalizer runs."""
        return f"{self.prefix}:finalizer:heartbeat"

    def all_pattern(self) -> str:
        """Pattern matching every key under this prefix (for cleanup in tests)."""
        return f"{self.prefix}:*"
