"""
TLS of the exporter per export configuration (replication.md: certificates are verified,
optionally against a CA file or a pinned certificate set, never switched off silently).

What the two keys of an export configuration mean for the handshake:

- neither: the service's default, treq's browser-like policy against the system's roots (or
  the service-wide CA file); chain and hostname verified.
- ``ca_file`` alone: the certificates in that file replace the system's roots; chain and
  hostname verified.
- ``pinned_certificates`` alone: the server's leaf certificate must have one of the pinned
  SHA-256 fingerprints (of its DER form), and nothing else is checked: neither its chain, nor
  its validity dates, nor its hostname. This is the usual set-up of a hub with a self-signed
  certificate, and a pin already names the one certificate to accept.
- both: the chain must verify against ``ca_file``, the hostname must match *and* the leaf must
  be pinned.

Every check is made during the handshake, so nothing (credentials included) is sent to a
server that fails one.
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Collection, Optional

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL.SSL import VERIFY_FAIL_IF_NO_PEER_CERT, VERIFY_PEER, Connection, Error
from service_identity import CertificateError, VerificationError
from service_identity.cryptography import (
    verify_certificate_hostname, verify_certificate_ip_address)
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.ssl import Certificate, optionsForClientTLS, trustRootFromCertificates
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import BrowserLikePolicyForHTTPS
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

__all__ = ["CAFileUnreadable", "CertificateNotPinned", "PinningPolicyForHTTPS",
           "TLS_REFUSALS", "certificate_fingerprint", "https_policy", "load_trust_root"]

log = Logger()


class CAFileUnreadable(ValueError):
    """A CA file cannot be read or holds no PEM certificate; the message names the file."""


class CertificateNotPinned(Exception):
    """The server's leaf certificate is not one of the pinned certificates."""


# What a connection fails with when its TLS handshake is refused, by either side.
TLS_REFUSALS = (Error, CertificateNotPinned, VerificationError, CertificateError)


def load_trust_root(ca_file: str) -> Any:
    """
    The certificates of the PEM file `ca_file` as a Twisted trust root (`IOpenSSLTrustRoot`);
    `CAFileUnreadable` when it cannot be read or holds none.
    """
    try:
        with open(ca_file, "rb") as f:
            pem = f.read()
    except OSError as e:
        raise CAFileUnreadable(f"CA file {ca_file} unreadable: {e.strerror or e}") from None
    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise CAFileUnreadable(
            f"CA file {ca_file} unreadable: it holds no valid PEM certificate") from None
    return trustRootFromCertificates(
        [Certificate.loadPEM(c.public_bytes(Encoding.PEM)) for c in certificates])


def certificate_fingerprint(certificate: x509.Certificate) -> str:
    """The SHA-256 fingerprint of a certificate's DER form, as pins write it."""
    return hashlib.sha256(certificate.public_bytes(Encoding.DER)).hexdigest()


def https_policy(ca_file: Optional[str] = None,
                 pinned_certificates: Optional[Collection[str]] = None) -> IPolicyForHTTPS:
    """
    The policy for an export configuration's `ca_file` and `pinned_certificates` (see the
    module docstring); `CAFileUnreadable` when `ca_file` is.
    """
    trust_root = None if ca_file is None else load_trust_root(ca_file)
    if pinned_certificates:
        return PinningPolicyForHTTPS(pinned_certificates, trust_root)
    if trust_root is None:
        return BrowserLikePolicyForHTTPS()
    return BrowserLikePolicyForHTTPS(trustRoot=trust_root)


@implementer(IPolicyForHTTPS)
class PinningPolicyForHTTPS:
    """
    Accepts a server whose leaf certificate has one of the SHA-256 fingerprints `pins`; with
    `trust_root`, its chain must verify against those roots and its hostname match too.
    """

    def __init__(self, pins: Collection[str], trust_root: Any = None) -> None:
        if not pins:
            raise ValueError("at least one pinned certificate is needed")
        self._pins = frozenset(pins)
        self._trust_root = trust_root

    def creatorForNetloc(self, hostname: bytes, port: int) -> IOpenSSLClientConnectionCreator:
        host = hostname.decode("ascii")
        # optionsForClientTLS gives the context, SNI and ALPN; its verification is replaced
        # per connection by _PinningConnectionCreator, which does the checks this policy needs.
        options = optionsForClientTLS(host, trustRoot=self._trust_root)
        return _PinningConnectionCreator(options, host, self._pins,
                                         verify_chain=self._trust_root is not None)


@implementer(IOpenSSLClientConnectionCreator)
class _PinningConnectionCreator:
    """Twisted's client connections for `host`, verified as `PinningPolicyForHTTPS` says."""

    def __init__(self, options: IOpenSSLClientConnectionCreator, host: str,
                 pins: frozenset[str], verify_chain: bool) -> None:
        self._options = options
        self._host = host
        self._pins = pins
        self._verify_chain = verify_chain

    def clientConnectionForTLS(self, tls_protocol: Any) -> Connection:
        connection = self._options.clientConnectionForTLS(tls_protocol)
        connection.set_verify(VERIFY_PEER | VERIFY_FAIL_IF_NO_PEER_CERT,
                              self._verifier(tls_protocol))
        return connection

    def _verifier(self, tls_protocol: Any) -> Callable[..., bool]:
        def verify(connection: Connection, certificate: Any, error: int, depth: int,
                   ok: int) -> bool:
            if depth > 0:
                return bool(ok) or not self._verify_chain
            if self._verify_chain and not ok:
                return False
            # An exception must not escape an OpenSSL callback, and any doubt refuses.
            try:
                self._check_leaf(certificate.to_cryptography())
            except (CertificateNotPinned, VerificationError, CertificateError):
                tls_protocol.failVerification(Failure())
                return False
            except Exception:
                log.failure("while checking the certificate of {host}", host=self._host)
                return False
            return True

        return verify

    def _check_leaf(self, certificate: x509.Certificate) -> None:
        if self._verify_chain:
            if isIPAddress(self._host) or isIPv6Address(self._host):
                verify_certificate_ip_address(certificate, self._host)
            else:
                verify_certificate_hostname(certificate, self._host)
        fingerprint = certificate_fingerprint(certificate)
        if fingerprint not in self._pins:
            raise CertificateNotPinned(
                f"certificate not pinned: {self._host} presented a certificate with SHA-256 "
                f"fingerprint {fingerprint}, pinned: {', '.join(sorted(self._pins))}")
