"""Ed25519 node keys and the self-signed certificates that carry them into TLS (cryptography)."""

from __future__ import annotations

import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

RAW = serialization.Encoding.Raw
CERTIFICATE_LIFETIME = datetime.timedelta(days=3650)


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
        """A self-signed certificate for this key: peers pin the key, not a CA."""
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = datetime.datetime.now(datetime.timezone.utc)
        return (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.private_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + CERTIFICATE_LIFETIME)
            .sign(self.private_key, None)
        )

    def certificate_pem(self, common_name: str) -> bytes:
        return self.certificate(common_name).public_bytes(serialization.Encoding.PEM)

    def private_key_pem(self) -> bytes:
        return self.private_key.private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption())


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
