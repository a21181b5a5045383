"""
The node registry: what this node knows of the other nodes on its network.

Pure code fed with validated beacons and the local time: it records nodes, judges replays and
the `max_nodes` bound, computes online/offline status, renders the `GET /api/nodes` shape, and
decides when a node must be written to the store, so that the protocol only carries out what
it decides.

Choices where the specification is silent:

- A node is `online` while `now - last_seen <= 3 * interval` (its own announced interval) and it
  has not said `bye`; any later accepted beacon other than a `bye` makes it online again.
- A `bye` from an unknown node is recorded (offline): it was accepted, and an operator may like
  to know the node exists.
- Nodes are never evicted; once `max_nodes` entries exist, beacons of unknown nodes are dropped
  (`registry_full`) while known nodes keep being updated. Set a secret on networks where
  strangers could fill the registry.
- Replay state (`boot`, `seq`) lives in memory only: after a restart the first beacon of each
  node is accepted whatever its `seq`.
- Write rate: a node is saved when first seen, when anything the API shows changes except
  `last_seen` and `status` (name, roles, address, port, scheme, version, interval, a `bye` or a
  return after one), and when its `last_seen` has advanced by `refresh_ms` (default 5 minutes)
  since its last save. Whatever the cause, one node is saved at most once per `save_gap_ms`
  (default 5 s); a save due inside that gap is marked pending and handed out later by
  `due_saves` (at the next announcement round, and at shutdown whatever the gap). A registry
  of 1,024 unchanged nodes therefore writes about 3.4 rows a second.
- `nodes_json` lists nodes by name, then node id.
"""

from __future__ import annotations

from typing import Any, Iterable

import attrs

from meteord.protocols.beacon import (
    KIND_BYE,
    REASON_REGISTRY_FULL,
    REASON_REPLAY,
    Beacon,
    BeaconRejected,
)

STATUS_ONLINE = "online"
STATUS_OFFLINE = "offline"

#: A node stays online for this many of its own intervals after it was last heard.
ONLINE_INTERVALS = 3
DEFAULT_MAX_NODES = 1024
DEFAULT_SAVE_GAP_MS = 5_000
DEFAULT_REFRESH_MS = 300_000


@attrs.define
class NodeRecord:
    """One node of the registry, with the replay and save bookkeeping that goes with it."""

    node_id: str
    name: str
    roles: tuple[str, ...]
    address: str
    http_port: int
    scheme: str
    version: str
    interval: float
    first_seen: int
    last_seen: int
    departed: bool = False
    boot: str | None = None
    seq: int | None = None
    saved_at: int | None = None
    saved_last_seen: int | None = None

    def status(self, now_ms: int) -> str:
        """C{"online"} or C{"offline"} at C{now_ms}."""
        if self.departed:
            return STATUS_OFFLINE
        if now_ms - self.last_seen <= ONLINE_INTERVALS * self.interval * 1000:
            return STATUS_ONLINE
        return STATUS_OFFLINE

    def to_json(self, now_ms: int) -> dict[str, Any]:
        """The node as C{GET /api/nodes} shows it."""
        return {
            "node_id": self.node_id,
            "name": self.name,
            "roles": list(self.roles),
            "address": self.address,
            "http_port": self.http_port,
            "scheme": self.scheme,
            "version": self.version,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "status": self.status(now_ms),
        }

    def to_stored(self, now_ms: int) -> dict[str, Any]:
        """The node as the store keeps it: the API shape plus C{interval}."""
        stored = self.to_json(now_ms)
        stored["interval"] = self.interval
        return stored


def _require(stored: dict[str, Any], key: str, kinds: tuple[type, ...]) -> Any:
    value = stored[key]
    if type(value) not in kinds:
        raise ValueError(f"stored node key {key!r} has type {type(value).__name__}")
    return value


def record_from_stored(stored: dict[str, Any]) -> NodeRecord:
    """
    Rebuild a record from what L{NodeRecord.to_stored} produced.

    @raise ValueError: a key is missing or of the wrong type.
    """
    try:
        roles = _require(stored, "roles", (list, tuple))
        if not all(type(role) is str for role in roles):
            raise ValueError("stored node roles must be strings")
        last_seen = _require(stored, "last_seen", (int,))
        return NodeRecord(
            node_id=_require(stored, "node_id", (str,)),
            name=_require(stored, "name", (str,)),
            roles=tuple(roles),
            address=_require(stored, "address", (str,)),
            http_port=_require(stored, "http_port", (int,)),
            scheme=_require(stored, "scheme", (str,)),
            version=_require(stored, "version", (str,)),
            interval=_require(stored, "interval", (int, float)),
            first_seen=_require(stored, "first_seen", (int,)),
            last_seen=last_seen,
            departed=_require(stored, "status", (str,)) == STATUS_OFFLINE,
            saved_last_seen=last_seen,
        )
    except KeyError as e:
        raise ValueError(f"stored node lacks key {e.args[0]!r}") from None


@attrs.frozen
class Observation:
    """
    What the registry made of one accepted beacon.

    @ivar record: the node's record, already updated.
    @ivar new: the node was not in the registry before.
    @ivar save: the stored form to write now, or C{None} when no write is due.
    """

    record: NodeRecord
    new: bool
    save: dict[str, Any] | None


def _describes_differently(record: NodeRecord, beacon: Beacon, address: str) -> bool:
    return (
        record.name != beacon.name
        or record.roles != beacon.roles
        or record.address != address
        or record.http_port != beacon.http_port
        or record.scheme != beacon.scheme
        or record.version != beacon.version
        or record.interval != beacon.interval
        or record.departed != (beacon.kind == KIND_BYE)
    )


@attrs.define
class NodeRegistry:
    """The nodes heard so far, bounded by C{max_nodes}."""

    max_nodes: int = DEFAULT_MAX_NODES
    save_gap_ms: int = DEFAULT_SAVE_GAP_MS
    refresh_ms: int = DEFAULT_REFRESH_MS
    _nodes: dict[str, NodeRecord] = attrs.field(factory=dict, init=False)
    _pending: set[str] = attrs.field(factory=set, init=False)

    def __len__(self) -> int:
        return len(self._nodes)

    def get(self, node_id: str) -> NodeRecord | None:
        """The record of C{node_id}, or C{None}."""
        return self._nodes.get(node_id)

    def observe(self, beacon: Beacon, address: str, now_ms: int) -> Observation:
        """
        Record an accepted beacon received from C{address} (the datagram's source IP).

        @raise BeaconRejected: C{replay} when the beacon is of the node's current boot and its
            C{seq} is not above the last accepted one; C{registry_full} for an unknown node
            when C{max_nodes} nodes are known.
        """
        record = self._nodes.get(beacon.node_id)
        new = record is None
        if record is None:
            if len(self._nodes) >= self.max_nodes:
                raise BeaconRejected(REASON_REGISTRY_FULL, beacon.node_id)
            record = NodeRecord(
                node_id=beacon.node_id,
                name=beacon.name,
                roles=beacon.roles,
                address=address,
                http_port=beacon.http_port,
                scheme=beacon.scheme,
                version=beacon.version,
                interval=beacon.interval,
                first_seen=now_ms,
                last_seen=now_ms,
            )
            self._nodes[beacon.node_id] = record
            changed = True
        else:
            if record.boot == beacon.boot and record.seq is not None and beacon.seq <= record.seq:
                raise BeaconRejected(REASON_REPLAY, f"{beacon.node_id} seq {beacon.seq}")
            changed = _describes_differently(record, beacon, address)
            record.name = beacon.name
            record.roles = beacon.roles
            record.address = address
            record.http_port = beacon.http_port
            record.scheme = beacon.scheme
            record.version = beacon.version
            record.interval = beacon.interval
            record.last_seen = now_ms
        record.departed = beacon.kind == KIND_BYE
        record.boot = beacon.boot
        record.seq = beacon.seq
        return Observation(record=record, new=new, save=self._save_if_due(record, changed, now_ms))

    def _save_if_due(
        self, record: NodeRecord, changed: bool, now_ms: int
    ) -> dict[str, Any] | None:
        stale = (
            record.saved_last_seen is None
            or record.last_seen - record.saved_last_seen >= self.refresh_ms
        )
        if not (changed or stale or record.node_id in self._pending):
            return None
        if record.saved_at is not None and now_ms - record.saved_at < self.save_gap_ms:
            self._pending.add(record.node_id)
            return None
        return self._mark_saved(record, now_ms)

    def _mark_saved(self, record: NodeRecord, now_ms: int) -> dict[str, Any]:
        self._pending.discard(record.node_id)
        record.saved_at = now_ms
        record.saved_last_seen = record.last_seen
        return record.to_stored(now_ms)

    def due_saves(self, now_ms: int, everything: bool = False) -> list[dict[str, Any]]:
        """
        The stored forms of pending nodes whose save gap has passed (of every pending node
        with C{everything}, for a last flush at shutdown); they count as saved.
        """
        due = []
        for node_id in sorted(self._pending):
            record = self._nodes[node_id]
            if (
                everything
                or record.saved_at is None
                or now_ms - record.saved_at >= self.save_gap_ms
            ):
                due.append(self._mark_saved(record, now_ms))
        return due

    def save_failed(self, node_id: str) -> None:
        """A save of C{node_id} did not reach the store: hand it out again later."""
        if node_id in self._nodes:
            self._pending.add(node_id)

    def load(self, stored_nodes: Iterable[dict[str, Any]]) -> tuple[int, int]:
        """
        Add nodes read from the store, keeping any record already observed since the start.

        @return: how many were loaded and how many were skipped (malformed, duplicate or over
            C{max_nodes}).
        """
        loaded = skipped = 0
        for stored in stored_nodes:
            try:
                record = record_from_stored(stored)
            except ValueError:
                skipped += 1
                continue
            if record.node_id in self._nodes or len(self._nodes) >= self.max_nodes:
                skipped += 1
                continue
            self._nodes[record.node_id] = record
            loaded += 1
        return loaded, skipped

    def nodes_json(self, now_ms: int) -> list[dict[str, Any]]:
        """The registry in the shape of C{GET /api/nodes}'s C{"nodes"} list."""
        records = sorted(self._nodes.values(), key=lambda r: (r.name, r.node_id))
        return [record.to_json(now_ms) for record in records]
