"""Ed25519 node keys and the certificates that carry them into TLS (cryptography).

A node's certificate is issued by PUBLIC_ISSUER, a key every copy of MeshDesk derives from a
published seed: it is no authority (anyone can issue under it), it only lets the standard
library's ssl, which verifies a chain or nothing, accept a dialler's client certificate on the
data plane. Who a peer is comes from the key in its certificate, pinned by the mesh handshake.
"""

from __future__ import annotations

import datetime
import hashlib

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

RAW = serialization.Encoding.Raw
CERTIFICATE_LIFETIME = datetime.timedelta(days=3650)
# Not a secret: published so that every node can issue its own certificate under it (see above).
PUBLIC_ISSUER_SEED = hashlib.sha256(b"meshdesk/1 public certificate issuer").digest()
PUBLIC_ISSUER_NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "MeshDesk public issuer")])


class NodeKey:
    """A node's private key: signs handshakes and invites; its public half names the node."""

    def __init__(self, private_key: ed25519.Ed25519PrivateKey):
        self.private_key = private_key
        self.public_bytes = private_key.public_key().public_bytes(RAW, serialization.PublicFormat.Raw)

    @classmethod
    def generate(cls) -> "NodeKey":
        return cls(ed25519.Ed25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, data: bytes) -> "NodeKey":
        return cls(ed25519.Ed25519PrivateKey.from_private_bytes(data))

    def private_bytes(self) -> bytes:
        return self.private_key.private_bytes(RAW, serialization.PrivateFormat.Raw,
                                              serialization.NoEncryption())

    def sign(self, message: bytes) -> bytes:
        return self.private_key.sign(message)

    def certificate(self, common_name: str) -> x509.Certificate:
        """A certificate for this key under the public issuer: peers pin the key, not a CA."""
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = datetime.datetime.now(datetime.timezone.utc)
        return (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(PUBLIC_ISSUER_NAME)
            .public_key(self.private_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + CERTIFICATE_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ed25519.Ed25519PrivateKey.from_private_bytes(PUBLIC_ISSUER_SEED), None)
        )

    def certificate_pem(self, common_name: str) -> bytes:
        return self.certificate(common_name).public_bytes(serialization.Encoding.PEM)

    def private_key_pem(self) -> bytes:
        return self.private_key.private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption())


def public_issuer_pem() -> bytes:
    """The public issuer's certificate, the same bytes on every node (Ed25519 signs deterministically)."""
    key = ed25519.Ed25519PrivateKey.from_private_bytes(PUBLIC_ISSUER_SEED)
    start = datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(PUBLIC_ISSUER_NAME)
        .issuer_name(PUBLIC_ISSUER_NAME)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(datetime.datetime(9999, 12, 31, tzinfo=datetime.timezone.utc))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=True, crl_sign=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .sign(key, None)
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> bool:
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def certificate_public_key(certificate: x509.Certificate | bytes) -> bytes | None:
    """The raw Ed25519 key inside a certificate (DER bytes or parsed), or None for any other."""
    try:
        if isinstance(certificate, (bytes, bytearray)):
            certificate = x509.load_der_x509_certificate(bytes(certificate))
        key = certificate.public_key()
    except ValueError:
        return None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        return None
    return key.public_bytes(RAW, serialization.PublicFormat.Raw)
