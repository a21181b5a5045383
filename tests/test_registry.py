"""
Tests for meteord.protocols.registry: recording nodes, replays, the max_nodes bound, status,
the GET /api/nodes shape, loading, and when nodes are due to be saved.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from meteord.protocols.beacon import REASON_REGISTRY_FULL, REASON_REPLAY, BeaconRejected
from meteord.protocols.registry import NodeRegistry, record_from_stored
from tests.test_beacon import make_beacon

T0 = 1_700_000_000_000
API_KEYS = {
    "node_id",
    "name",
    "roles",
    "address",
    "http_port",
    "scheme",
    "version",
    "first_seen",
    "last_seen",
    "status",
}


class ObserveTests(SynchronousTestCase):
    """What an accepted beacon does to the registry."""

    def setUp(self) -> None:
        self.registry = NodeRegistry()

    def test_new_node_is_recorded_with_source_address(self) -> None:
        observation = self.registry.observe(make_beacon(seq=1), "192.0.2.7", T0)
        self.assertTrue(observation.new)
        [node] = self.registry.nodes_json(T0)
        self.assertEqual(
            node,
            {
                "node_id": "0123456789ab",
                "name": "Camera on the roof",
                "roles": ["camera", "query"],
                "address": "192.0.2.7",
                "http_port": 8080,
                "scheme": "http",
                "version": "0.1.0",
                "first_seen": T0,
                "last_seen": T0,
                "status": "online",
            },
        )

    def test_later_beacon_updates_last_seen_and_fields(self) -> None:
        self.registry.observe(make_beacon(seq=1), "192.0.2.7", T0)
        observation = self.registry.observe(
            make_beacon(seq=2, http_port=8443, scheme="https"), "192.0.2.8", T0 + 10_000
        )
        self.assertFalse(observation.new)
        [node] = self.registry.nodes_json(T0 + 10_000)
        self.assertEqual(
            (node["first_seen"], node["last_seen"], node["address"], node["http_port"]),
            (T0, T0 + 10_000, "192.0.2.8", 8443),
        )
        self.assertEqual(node["scheme"], "https")

    def test_replay_of_same_boot_is_rejected(self) -> None:
        self.registry.observe(make_beacon(seq=10), "192.0.2.7", T0)
        for seq in (10, 9, 0):
            rejected = self.assertRaises(
                BeaconRejected, self.registry.observe, make_beacon(seq=seq), "192.0.2.7", T0 + 1
            )
            self.assertEqual(rejected.reason, REASON_REPLAY)
        self.assertEqual(self.registry.get("0123456789ab").last_seen, T0)
        self.registry.observe(make_beacon(seq=11), "192.0.2.7", T0 + 2)

    def test_new_boot_restarts_sequence(self) -> None:
        self.registry.observe(make_beacon(seq=10), "192.0.2.7", T0)
        self.registry.observe(make_beacon(seq=3, boot="feed"), "192.0.2.7", T0 + 1)
        self.assertEqual(self.registry.get("0123456789ab").seq, 3)

    def test_registry_full_drops_unknown_nodes_only(self) -> None:
        registry = NodeRegistry(max_nodes=2)
        registry.observe(make_beacon(node_id="a", seq=1), "192.0.2.1", T0)
        registry.observe(make_beacon(node_id="b", seq=1), "192.0.2.2", T0)
        rejected = self.assertRaises(
            BeaconRejected, registry.observe, make_beacon(node_id="c", seq=1), "192.0.2.3", T0
        )
        self.assertEqual(rejected.reason, REASON_REGISTRY_FULL)
        registry.observe(make_beacon(node_id="a", seq=2), "192.0.2.1", T0 + 5)
        self.assertEqual(len(registry), 2)
        self.assertEqual(registry.get("a").last_seen, T0 + 5)
        self.assertIsNone(registry.get("c"))


class StatusTests(SynchronousTestCase):
    """Online while within three of the node's intervals; a bye is offline at once."""

    def setUp(self) -> None:
        self.registry = NodeRegistry()

    def status(self, now_ms: int) -> str:
        [node] = self.registry.nodes_json(now_ms)
        status: str = node["status"]
        return status

    def test_online_for_three_intervals(self) -> None:
        self.registry.observe(make_beacon(seq=1, interval=10.0), "192.0.2.7", T0)
        self.assertEqual(self.status(T0 + 30_000), "online")
        self.assertEqual(self.status(T0 + 30_001), "offline")

    def test_uses_the_nodes_own_interval(self) -> None:
        self.registry.observe(make_beacon(seq=1, interval=2.5), "192.0.2.7", T0)
        self.assertEqual(self.status(T0 + 7_500), "online")
        self.assertEqual(self.status(T0 + 7_501), "offline")

    def test_bye_is_offline_at_once(self) -> None:
        self.registry.observe(make_beacon(seq=1), "192.0.2.7", T0)
        self.registry.observe(make_beacon(seq=2, kind="bye"), "192.0.2.7", T0 + 1)
        self.assertEqual(self.status(T0 + 1), "offline")

    def test_beacon_after_bye_is_online_again(self) -> None:
        self.registry.observe(make_beacon(seq=1, kind="bye"), "192.0.2.7", T0)
        self.registry.observe(make_beacon(seq=1, boot="feed", kind="probe"), "192.0.2.7", T0 + 5)
        self.assertEqual(self.status(T0 + 5), "online")

    def test_nodes_are_listed_by_name_then_id(self) -> None:
        for node_id, name in (("c", "beta"), ("a", "beta"), ("b", "alpha")):
            self.registry.observe(make_beacon(node_id=node_id, name=name), "192.0.2.7", T0)
        nodes = self.registry.nodes_json(T0)
        self.assertEqual([node["node_id"] for node in nodes], ["b", "a", "c"])
        for node in nodes:
            self.assertEqual(set(node), API_KEYS)


class SaveTests(SynchronousTestCase):
    """A node is written when first seen or changed, not on every announcement."""

    def setUp(self) -> None:
        self.registry = NodeRegistry(save_gap_ms=5_000, refresh_ms=300_000)

    def observe(self, seq: int, now_ms: int, **changes: Any) -> dict[str, Any] | None:
        return self.registry.observe(make_beacon(seq=seq, **changes), "192.0.2.7", now_ms).save

    def test_first_sight_is_saved_with_interval(self) -> None:
        saved = self.observe(1, T0)
        assert saved is not None
        self.assertEqual(set(saved), API_KEYS | {"interval"})
        self.assertEqual(saved["interval"], 10.0)

    def test_unchanged_announcements_are_not_saved(self) -> None:
        self.observe(1, T0)
        for seq in range(2, 30):
            self.assertIsNone(self.observe(seq, T0 + seq * 10_000))
        self.assertEqual(self.registry.due_saves(T0 + 300_000), [])

    def test_change_is_saved(self) -> None:
        self.observe(1, T0)
        saved = self.observe(2, T0 + 10_000, name="Renamed")
        assert saved is not None
        self.assertEqual(saved["name"], "Renamed")

    def test_address_change_is_saved(self) -> None:
        self.observe(1, T0)
        observation = self.registry.observe(make_beacon(seq=2), "192.0.2.99", T0 + 10_000)
        assert observation.save is not None
        self.assertEqual(observation.save["address"], "192.0.2.99")

    def test_bye_is_saved_as_offline(self) -> None:
        self.observe(1, T0)
        saved = self.observe(2, T0 + 10_000, kind="bye")
        assert saved is not None
        self.assertEqual(saved["status"], "offline")

    def test_changes_inside_the_gap_are_saved_once_later(self) -> None:
        self.observe(1, T0)
        self.assertIsNone(self.observe(2, T0 + 1_000, name="One"))
        self.assertIsNone(self.observe(3, T0 + 2_000, name="Two"))
        self.assertEqual(self.registry.due_saves(T0 + 4_999), [])
        [saved] = self.registry.due_saves(T0 + 5_000)
        self.assertEqual(saved["name"], "Two")
        self.assertEqual(self.registry.due_saves(T0 + 60_000), [])

    def test_pending_save_goes_with_next_announcement_after_gap(self) -> None:
        self.observe(1, T0)
        self.observe(2, T0 + 1_000, name="One")
        saved = self.observe(3, T0 + 6_000, name="One")
        assert saved is not None
        self.assertEqual(saved["last_seen"], T0 + 6_000)
        self.assertEqual(self.registry.due_saves(T0 + 60_000), [])

    def test_last_seen_is_refreshed_after_refresh_period(self) -> None:
        self.observe(1, T0)
        self.assertIsNone(self.observe(2, T0 + 299_999))
        saved = self.observe(3, T0 + 300_000)
        assert saved is not None
        self.assertEqual(saved["last_seen"], T0 + 300_000)

    def test_failed_save_is_handed_out_again(self) -> None:
        self.observe(1, T0)
        self.registry.save_failed("0123456789ab")
        self.registry.save_failed("unknown")
        self.assertEqual(self.registry.due_saves(T0 + 1_000), [])
        [saved] = self.registry.due_saves(T0 + 5_000)
        self.assertEqual(saved["node_id"], "0123456789ab")


class LoadTests(SynchronousTestCase):
    """The registry comes back from what was saved."""

    def stored(self, **changes: Any) -> dict[str, Any]:
        registry = NodeRegistry()
        saved = registry.observe(make_beacon(seq=1), "192.0.2.7", T0).save
        assert saved is not None
        saved.update(changes)
        return saved

    def test_round_trip(self) -> None:
        registry = NodeRegistry()
        self.assertEqual(registry.load([self.stored()]), (1, 0))
        expected = self.stored()
        del expected["interval"]
        self.assertEqual(registry.nodes_json(T0), [expected])
        self.assertEqual(registry.get("0123456789ab").to_stored(T0), self.stored())

    def test_status_is_recomputed_and_bye_kept(self) -> None:
        registry = NodeRegistry()
        registry.load([self.stored(node_id="gone", status="offline"), self.stored()])
        statuses = {node["node_id"]: node["status"] for node in registry.nodes_json(T0 + 1)}
        self.assertEqual(statuses, {"gone": "offline", "0123456789ab": "online"})
        statuses = {node["node_id"]: node["status"] for node in registry.nodes_json(T0 + 31_000)}
        self.assertEqual(statuses, {"gone": "offline", "0123456789ab": "offline"})

    def test_malformed_and_surplus_are_skipped(self) -> None:
        registry = NodeRegistry(max_nodes=2)
        missing = self.stored(node_id="m")
        del missing["version"]
        loaded = registry.load(
            [
                missing,
                self.stored(node_id="t", http_port="80"),
                self.stored(node_id="r", roles=[1]),
                self.stored(node_id="a"),
                self.stored(node_id="b"),
                self.stored(node_id="c"),
            ]
        )
        self.assertEqual(loaded, (2, 4))
        self.assertEqual([node["node_id"] for node in registry.nodes_json(T0)], ["a", "b"])

    def test_observed_nodes_win_over_loaded(self) -> None:
        registry = NodeRegistry()
        registry.observe(make_beacon(seq=1, name="Fresh"), "192.0.2.8", T0 + 100)
        self.assertEqual(registry.load([self.stored(name="Stale")]), (0, 1))
        self.assertEqual(registry.get("0123456789ab").name, "Fresh")

    def test_loaded_node_accepts_any_seq_and_saves_changes(self) -> None:
        registry = NodeRegistry()
        registry.load([self.stored()])
        observation = registry.observe(make_beacon(seq=0), "192.0.2.9", T0 + 100)
        assert observation.save is not None
        self.assertEqual(observation.save["address"], "192.0.2.9")
        self.assertEqual(observation.save["first_seen"], T0)

    def test_record_from_stored_names_the_problem(self) -> None:
        stored = self.stored()
        del stored["scheme"]
        error = self.assertRaises(ValueError, record_from_stored, stored)
        self.assertIn("scheme", str(error))
