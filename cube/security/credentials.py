"""Client credentials: where the manager is, its public key, and a client keypair with a role.

The CLI finds them in --credentials FILE, else $CUBE_CREDENTIALS, else
~/.config/cube/credentials (docs/security.md, "Credentials").
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

from cube.security.curve import CurveClient
from cube.security.files import write_json
from cube.security.keys import Keypair, valid_key

DEFAULT_PATH = os.path.join("~", ".config", "cube", "credentials")
ENV = "CUBE_CREDENTIALS"


class CredentialsError(Exception):
    """No usable credentials; the message is the one line the user sees."""


@dataclass(frozen=True)
class Credentials:
    manager: str  # host:port of the API
    events: str  # host:port of the event stream
    server_key: str  # the manager's public key, z85
    public: str  # this client's keypair, z85
    secret: str
    name: str
    role: str

    def curve(self) -> CurveClient:
        return CurveClient(Keypair(self.public.encode(), self.secret.encode()), self.server_key.encode())

    def to_dict(self) -> dict[str, str]:
        return {"kind": "cube-credentials", **asdict(self)}

    def save(self, path: str) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
        write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, data: dict, source: str = "credentials") -> "Credentials":
        if not isinstance(data, dict) or data.get("kind") != "cube-credentials":
            raise CredentialsError(f"{source} is not a Cube credentials file")
        try:
            creds = cls(**{k: str(data[k]) for k in cls.__dataclass_fields__})
        except KeyError as e:
            raise CredentialsError(f"{source} has no field {e.args[0]!r}") from None
        for field in ("server_key", "public", "secret"):
            if not valid_key(getattr(creds, field)):
                raise CredentialsError(f"{source}: field {field!r} is not a CURVE key")
        return creds

    @classmethod
    def load(cls, path: str) -> "Credentials":
        try:
            with open(os.path.expanduser(path)) as f:
                data = json.load(f)
        except FileNotFoundError:
            raise CredentialsError(f"credentials file {path} does not exist") from None
        except PermissionError:
            raise CredentialsError(f"cannot read credentials file {path}: permission denied") from None
        except (OSError, ValueError) as e:
            raise CredentialsError(f"cannot read credentials file {path}: {e}") from None
        return cls.from_dict(data, path)


def locate(explicit: str = "") -> str | None:
    """The credentials file to use: the flag, the environment, the default path, or None."""
    if explicit:
        return explicit
    if os.environ.get(ENV):
        return os.environ[ENV]
    default = os.path.expanduser(DEFAULT_PATH)
    return default if os.path.exists(default) else None
