"""The RS256 signing key: created on first start, kept in a file (a Secret in Kubernetes),
published as a JWKS document so the gateway can verify tokens without the private half."""
from __future__ import annotations

import base64
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def _b64(number: int) -> str:
    raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass(frozen=True)
class SigningKey:
    private_pem: bytes
    kid: str
    jwks: dict


def load_or_create(path: Path) -> SigningKey:
    """Reads the PEM at `path`, creating a 2048-bit RSA key there (mode 0600) if missing."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".key-")  # mode 0600, a name of its own
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
        try:
            os.link(tmp, path)  # atomic: if several processes start at once, the first key wins
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    pem = path.read_bytes()
    key = serialization.load_pem_private_key(pem, password=None)
    numbers = key.public_key().public_numbers()
    kid = hashlib.sha256(_b64(numbers.n).encode()).hexdigest()[:16]
    jwk = {"kty": "RSA", "alg": "RS256", "use": "sig", "kid": kid, "n": _b64(numbers.n), "e": _b64(numbers.e)}
    return SigningKey(pem, kid, {"keys": [jwk]})
