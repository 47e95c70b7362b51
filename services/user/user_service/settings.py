"""The user service's settings."""
from dataclasses import dataclass
from pathlib import Path

from mlstudio.common.settings import ServiceSettings, env


@dataclass(frozen=True, kw_only=True)
class UserSettings(ServiceSettings):
    service_name: str = "user"
    jwt_private_key_file: Path = env("JWT_PRIVATE_KEY_FILE", Path(".data/secrets/jwt-signing-key.pem"), help="RS256 signing key (PEM); created on first start when missing")
    jwt_issuer: str = env("JWT_ISSUER", "mlstudio", help="iss claim of issued tokens")
    token_ttl_s: int = env("TOKEN_TTL_S", 86400, help="lifetime of a login token")
