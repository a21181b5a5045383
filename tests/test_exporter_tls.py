"""
Tests for meteord.exporter.tls and the per-configuration TLS of the exporter: CA files and
fingerprints, then whole exports to an importer over real TLS on a loopback port, with
certificates made here (a private CA with a leaf for 127.0.0.1, and a self-signed certificate
for another name): a CA file, pins alone, both, and each way one of them fails.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import threading
from typing import Any, Optional

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    Encoding, NoEncryption, PrivateFormat)
from cryptography.x509.oid import NameOID
from twisted.internet import reactor
from twisted.internet.endpoints import SSL4ServerEndpoint
from twisted.internet.ssl import PrivateCertificate
from twisted.internet.testing import MemoryReactorClock
from twisted.protocols.policies import WrappingFactory
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import URI, BrowserLikePolicyForHTTPS
from twisted.web.error import SchemeNotSupported
from twisted.web.resource import Resource
from twisted.web.server import Site

from meteord.exporter import tls
from meteord.exporter.service import ExportCounters, ExporterService, _Endpoints
from meteord.exporter.tls import (
    CAFileUnreadable, PinningPolicyForHTTPS, certificate_fingerprint, https_policy,
    load_trust_root)
from meteord.model import ExportConfiguration
from tests._waiting import wait_until
from tests.test_exporter_service import FakeStore, export_config

DAY = datetime.timedelta(days=1)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(subject: str, key: Any, issuer: str, issuer_key: Any, *, ca: bool,
                 names: list[x509.GeneralName]) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(_name(subject)).issuer_name(_name(issuer))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - DAY).not_valid_after(now + DAY)
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


class Authority:
    """A private CA that issues server certificates."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.certificate = _certificate(name, self.key, name, self.key, ca=True, names=[])

    def pem(self) -> bytes:
        return self.certificate.public_bytes(Encoding.PEM)

    def issue(self, names: list[x509.GeneralName]) -> ServerIdentity:
        key = ec.generate_private_key(ec.SECP256R1())
        return ServerIdentity(key, _certificate("hub", key, self.name, self.key, ca=False,
                                                names=names))


class ServerIdentity:
    """A server's key and certificate."""

    def __init__(self, key: Any, certificate: x509.Certificate) -> None:
        self.key = key
        self.certificate = certificate
        self.fingerprint = certificate_fingerprint(certificate)

    @classmethod
    def self_signed(cls, dns_name: str) -> ServerIdentity:
        key = ec.generate_private_key(ec.SECP256R1())
        return cls(key, _certificate(dns_name, key, dns_name, key, ca=False,
                                     names=[x509.DNSName(dns_name)]))

    def options(self) -> Any:
        pem = (self.key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
               + self.certificate.public_bytes(Encoding.PEM))
        return PrivateCertificate.loadPEM(pem).options()


LOOPBACK = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
OTHER_PIN = "5a" * 32


class CompleteImporter(Resource):
    """An importer that stores nothing and answers every message ``complete``."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[dict] = []
        self.authorizations: list[bytes] = []

    def render_POST(self, request: Any) -> bytes:
        self.messages.append(json.loads(request.content.read()))
        self.authorizations.append(request.getHeader(b"authorization"))
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"state": "complete"}).encode()


class RedirectingImporter(CompleteImporter):
    """An importer that answers at its URL with a redirect to itself one segment further."""

    def __init__(self) -> None:
        super().__init__()
        self.redirects = 0

    def render_POST(self, request: Any) -> bytes:
        if request.path.endswith(b"/moved"):
            return super().render_POST(request)
        self.redirects += 1
        request.setResponseCode(307)
        request.setHeader(b"location", request.path + b"/moved")
        return b""


class CAFileTests(SynchronousTestCase):
    """Reading CA files, fingerprints and the choice of policy."""

    def write(self, data: bytes) -> str:
        path = os.path.abspath(self.mktemp())
        with open(path, "wb") as f:
            f.write(data)
        return path

    def test_bundle_of_certificates(self) -> None:
        path = self.write(Authority("one").pem() + b"some words\n" + Authority("two").pem())
        self.assertIsNotNone(load_trust_root(path))

    def test_unreadable_files_name_the_file(self) -> None:
        half = Authority("one").pem()[:200]
        for path in (os.path.abspath(self.mktemp()), self.write(b""),
                     self.write(b"not a certificate\n"), self.write(half),
                     self.write(Authority("one").pem().replace(b"M", b"!")),
                     os.path.dirname(self.write(b""))):
            e = self.assertRaises(CAFileUnreadable, load_trust_root, path)
            self.assertIn(f"CA file {path} unreadable", str(e))

    def test_private_key_alone_is_no_certificate(self) -> None:
        key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        self.assertRaises(CAFileUnreadable, load_trust_root, self.write(key))

    def test_fingerprint_is_sha256_of_der(self) -> None:
        certificate = ServerIdentity.self_signed("hub.example").certificate
        self.assertEqual(certificate_fingerprint(certificate),
                         certificate.fingerprint(hashes.SHA256()).hex())

    def test_policy_per_combination(self) -> None:
        ca = self.write(Authority("ca").pem())
        self.assertIsInstance(https_policy(), BrowserLikePolicyForHTTPS)
        self.assertIsInstance(https_policy(ca), BrowserLikePolicyForHTTPS)
        self.assertIsInstance(https_policy(None, [OTHER_PIN]), PinningPolicyForHTTPS)
        self.assertIsInstance(https_policy(ca, [OTHER_PIN]), PinningPolicyForHTTPS)
        self.assertRaises(CAFileUnreadable, https_policy, ca + ".missing", [OTHER_PIN])
        self.assertRaises(ValueError, PinningPolicyForHTTPS, [])


class EndpointTests(SynchronousTestCase):
    """The exporter's agent keeps one endpoint per importer instead of one per request."""

    def test_one_endpoint_per_scheme_host_and_port(self) -> None:
        endpoints = _Endpoints(MemoryReactorClock(), https_policy(None, [OTHER_PIN]))
        first = endpoints.endpointForURI(URI.fromBytes(b"https://hub.example:8443/api/import"))
        again = endpoints.endpointForURI(
            URI.fromBytes(b"https://hub.example:8443/api/import/data/ab/cd"))
        self.assertIs(first, again)
        for other in (b"http://hub.example:8443/", b"https://hub.example:9443/",
                      b"https://other.example:8443/"):
            self.assertIsNot(endpoints.endpointForURI(URI.fromBytes(other)), first)

    def test_other_schemes_are_refused(self) -> None:
        endpoints = _Endpoints(MemoryReactorClock(), https_policy())
        self.assertRaises(SchemeNotSupported, endpoints.endpointForURI,
                          URI.fromBytes(b"ftp://hub.example/api/import"))


class ExportOverTLSTests(TestCase):
    """Whole exports to a TLS importer on a loopback port, on the real reactor."""

    def setUp(self) -> None:
        self.store = FakeStore(reactor, os.path.abspath(self.mktemp()))
        self.authority = Authority("meteord test CA")
        self.ca_file = self.write_ca(self.authority)
        self.importer = CompleteImporter()

    def write_ca(self, authority: Authority) -> str:
        path = os.path.abspath(self.mktemp())
        with open(path, "wb") as f:
            f.write(authority.pem())
        return path

    async def serve(self, identity: ServerIdentity) -> str:
        """Serve the importer with `identity` over TLS; the import URL on 127.0.0.1."""
        factory = WrappingFactory(Site(self.importer))
        endpoint = SSL4ServerEndpoint(reactor, 0, identity.options(), interface="127.0.0.1")
        port = await endpoint.listen(factory)
        self.addCleanup(self._close_server, port, factory)
        return f"https://127.0.0.1:{port.getHost().port}/api/import"

    async def _close_server(self, port: Any, factory: WrappingFactory) -> None:
        await port.stopListening()
        for protocol in list(factory.protocols):
            protocol.transport.abortConnection()
        await wait_until(lambda: not factory.protocols)

    async def export(self, target_url: str, service_ca_file: Optional[str] = None,
                     **tls: Any) -> tuple[ExportConfiguration, ExporterService]:
        """Export one event under a configuration with `tls` keys, until it is settled."""
        config = self.store.add_config(export_config(target_url=target_url, **tls))
        self.store.select(config, "event", self.store.add_event())
        service = ExporterService(self.store, reactor, concurrency=1, ca_file=service_ca_file)
        service.startService()
        self.addCleanup(self._stop, service)

        def settled() -> bool:
            tasks = self.store.tasks_of(config)
            outcome = self.store.outcomes[config.config_id]
            return bool(tasks) and (tasks[0].state != "pending"
                                    or outcome.consecutive_failures > 0)

        await wait_until(settled)
        return config, service

    async def _stop(self, service: ExporterService) -> None:
        if service.running:
            await service.stopService()

    def assertCompleted(self, config: ExportConfiguration) -> None:
        self.assertEqual([t.state for t in self.store.tasks_of(config)], ["done"])
        self.assertEqual([m["type"] for m in self.importer.messages], ["event"])

    def assertTransportFailure(self, config: ExportConfiguration, *reasons: str) -> None:
        """A counted transport failure whose reason says all of `reasons`; nothing sent."""
        [task] = self.store.tasks_of(config)
        outcome = self.store.outcomes[config.config_id]
        self.assertEqual((task.state, outcome.consecutive_failures), ("pending", 1))
        self.assertGreater(task.due, reactor.seconds() + 1000)
        for reason in reasons:
            self.assertIn(reason, outcome.last_error)
        self.assertEqual(self.importer.messages, [])

    async def test_ca_file_of_the_configuration_verifies_the_server(self) -> None:
        url = await self.serve(self.authority.issue(LOOPBACK))
        config, _ = await self.export(url, ca_file=self.ca_file)
        self.assertCompleted(config)
        self.assertEqual(self.importer.authorizations, [b"Basic Y2FtZXJhMTpzZWNyZXQ="])

    async def test_ca_file_of_a_configuration_is_read_off_the_reactor_thread(self) -> None:
        readers: list[int] = []
        real = tls.load_trust_root

        def load_trust_root(ca_file: str) -> Any:
            readers.append(threading.get_ident())
            return real(ca_file)

        self.patch(tls, "load_trust_root", load_trust_root)
        url = await self.serve(self.authority.issue(LOOPBACK))
        config, _ = await self.export(url, ca_file=self.ca_file)
        self.assertCompleted(config)
        self.assertEqual(len(readers), 1)
        self.assertNotEqual(readers[0], threading.get_ident())

    async def test_redirect_is_not_followed(self) -> None:
        # The import goes to the configured URL; a streamed upload could not be sent again.
        self.importer = RedirectingImporter()
        url = await self.serve(self.authority.issue(LOOPBACK))
        config, _ = await self.export(url, ca_file=self.ca_file)
        self.assertTransportFailure(config, "HTTP 307 from importer")
        self.assertEqual(self.importer.redirects, 1)

    async def test_untrusted_certificate_without_tls_settings_fails_in_transport(
            self) -> None:
        url = await self.serve(self.authority.issue(LOOPBACK))
        config, service = await self.export(url)
        self.assertTransportFailure(config, "certificate verify failed")
        counters = service.counters[config.config_id]
        self.assertEqual((counters.transport_failures, counters.retried_requests), (1, 0))

    async def test_service_ca_file_is_the_default(self) -> None:
        url = await self.serve(self.authority.issue(LOOPBACK))
        config, _ = await self.export(url, service_ca_file=self.ca_file)
        self.assertCompleted(config)

    async def test_ca_file_checks_the_hostname(self) -> None:
        url = await self.serve(self.authority.issue([x509.DNSName("hub.example")]))
        config, _ = await self.export(url, ca_file=self.ca_file)
        self.assertTransportFailure(config, "IPAddressMismatch")

    async def test_pinned_self_signed_certificate_for_another_name(self) -> None:
        identity = ServerIdentity.self_signed("hub.example")
        url = await self.serve(identity)
        config, _ = await self.export(url, pinned_certificates=[OTHER_PIN, identity.fingerprint])
        self.assertCompleted(config)

    async def test_every_connection_through_a_kept_endpoint_is_verified(self) -> None:
        identity = ServerIdentity.self_signed("hub.example")
        url = await self.serve(identity)
        # Four entities at once need several connections, each made through the one endpoint.
        for pins, state, failures in (([identity.fingerprint], "done", 0),
                                      ([OTHER_PIN], "pending", 2)):
            config = self.store.add_config(export_config(target_url=url,
                                                         pinned_certificates=pins))
            for _ in range(4):
                self.store.select(config, "event", self.store.add_event())
            service = ExporterService(self.store, reactor, concurrency=4)
            service.startService()
            counters = service.counters.setdefault(config.config_id, ExportCounters())
            await wait_until(lambda: all(t.state == state for t in self.store.tasks_of(config))
                             and counters.transport_failures >= failures
                             and counters.attempts >= 2)
            await service.stopService()
            self.assertEqual(counters.transport_failures > 0, failures > 0)
        self.assertEqual(len(self.importer.messages), 4)

    async def test_wrong_pin_fails_in_transport_naming_the_pins(self) -> None:
        identity = ServerIdentity.self_signed("hub.example")
        url = await self.serve(identity)
        config, service = await self.export(url, pinned_certificates=[OTHER_PIN])
        self.assertTransportFailure(config, "certificate not pinned", identity.fingerprint,
                                    OTHER_PIN)
        counters = service.counters[config.config_id]
        self.assertEqual((counters.transport_failures, counters.retried_requests), (1, 0))
        self.assertNotIn("connection lost", self.store.outcomes[config.config_id].last_error)

    async def test_ca_file_and_pin_both_hold(self) -> None:
        identity = self.authority.issue(LOOPBACK)
        url = await self.serve(identity)
        config, _ = await self.export(url, ca_file=self.ca_file,
                                      pinned_certificates=[identity.fingerprint])
        self.assertCompleted(config)

    async def test_ca_file_and_wrong_pin_fail(self) -> None:
        url = await self.serve(self.authority.issue(LOOPBACK))
        config, _ = await self.export(url, ca_file=self.ca_file, pinned_certificates=[OTHER_PIN])
        self.assertTransportFailure(config, "certificate not pinned")

    async def test_pin_and_a_ca_file_that_does_not_trust_the_server_fail(self) -> None:
        identity = self.authority.issue(LOOPBACK)
        url = await self.serve(identity)
        stranger = self.write_ca(Authority("another CA"))
        config, _ = await self.export(url, ca_file=stranger,
                                      pinned_certificates=[identity.fingerprint])
        self.assertTransportFailure(config, "certificate verify failed")

    async def test_pin_and_ca_file_still_check_the_hostname(self) -> None:
        identity = self.authority.issue([x509.DNSName("hub.example")])
        url = await self.serve(identity)
        config, _ = await self.export(url, ca_file=self.ca_file,
                                      pinned_certificates=[identity.fingerprint])
        self.assertTransportFailure(config, "IPAddressMismatch")

    async def test_unreadable_ca_file_fails_in_transport(self) -> None:
        url = await self.serve(self.authority.issue(LOOPBACK))
        missing = self.ca_file + ".missing"
        config, service = await self.export(url, ca_file=missing)
        self.assertTransportFailure(config, f"CA file {missing} unreadable")
        self.assertNotIn((missing, None), service._pools)

    async def test_one_pool_per_combination_all_closed_on_stop(self) -> None:
        identity = self.authority.issue(LOOPBACK)
        url = await self.serve(identity)
        pins = [identity.fingerprint]
        configs = [self.store.add_config(export_config(target_url=url, **tls)) for tls in (
            {}, {"ca_file": self.ca_file}, {"pinned_certificates": pins},
            {"pinned_certificates": [p.upper() for p in pins]},
            {"ca_file": self.ca_file, "pinned_certificates": pins})]
        for config in configs:
            self.store.select(config, "event", self.store.add_event())
        service = ExporterService(self.store, reactor, concurrency=1)
        service.startService()
        self.addCleanup(self._stop, service)
        await wait_until(lambda: all(self.store.tasks_of(c) and (
            self.store.tasks_of(c)[0].state == "done"
            or self.store.outcomes[c.config_id].consecutive_failures) for c in configs))
        self.assertEqual([self.store.tasks_of(c)[0].state for c in configs],
                         ["pending"] + ["done"] * 4)
        self.assertEqual(set(service._pools), {
            (None, None), (self.ca_file, None), (None, tuple(pins)),
            (self.ca_file, tuple(pins))})
        closed: list[Any] = []
        for pool in service._pools.values():
            original = pool.closeCachedConnections
            pool.closeCachedConnections = lambda original=original: (
                closed.append(True) or original())
        await service.stopService()
        self.assertEqual((len(closed), service._pools), (4, {}))
