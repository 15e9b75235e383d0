"""The manager's side of security: its keypair, the join token, the keyring, credentials.

Everything lives in the manager's private data dir (0700, files 0600; docs/security.md):
`curve/manager.key[_secret]`, `join-token`, `keyring.json`, `admin.credentials`. The supervisor
creates them before it starts the actors (the Scheduler needs the keypair and the keyring, the
operator the token); the Manager actor then owns every change.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

from cube.security import curve, keys, token
from cube.security.credentials import Credentials, CredentialsError
from cube.security.keyring import ADMIN, FILE, KeyConflict, Keyring

TOKEN_FILE = "join-token"
ADMIN_FILE = "admin.credentials"


class JoinRefused(Exception):
    """A join that must not succeed; the message goes back to the worker."""


@dataclass(frozen=True)
class Addresses:
    api: str  # host:port a client connects to
    events: str
    workers: str


def addresses(config) -> Addresses:
    """Where clients and workers reach this manager (its advertised host)."""
    host = config.advertised_host
    return Addresses(api=f"{host}:{config.api_port}", events=f"{host}:{config.events_port}",
                     workers=f"{host}:{config.worker_port}")


class Authority:
    def __init__(self, data_dir: str, addresses: Addresses):
        keys.private_dir(data_dir)
        self.data_dir = data_dir
        self.addresses = addresses
        self.keypair = keys.load_or_create(data_dir, "manager")
        self.keyring = Keyring(os.path.join(data_dir, FILE))
        self.token_path = os.path.join(data_dir, TOKEN_FILE)
        self.token = token.load_or_create(self.token_path, self.keypair.public)

    # ---- sockets ----------------------------------------------------------------------------------
    def server(self, domain: str) -> curve.CurveServer:
        return curve.CurveServer(self.keypair, domain)

    def policies(self) -> dict[str, Callable[[str], bool]]:
        """Who may complete a handshake on each socket. Workers: any key not revoked, because a
        new worker must be able to present its token; everything else it says is refused until
        its key is bound to a name (Manager.admit)."""
        ring = self.keyring
        return {curve.API: ring.is_client, curve.EVENTS: ring.is_client,
                curve.WORKERS: lambda key: key not in ring.revoked}

    # ---- join tokens --------------------------------------------------------------------------------
    def join_command(self) -> str:
        """In the environment, not on the command line: a process's arguments are readable by
        every local user for as long as it runs, its environment only by its owner."""
        return f"CUBE_WORKER_JOIN={self.token} cube-worker --manager {self.addresses.workers}"

    def rotate_token(self) -> token.JoinToken:
        self.token = token.save(self.token_path, token.new_token(self.keypair.public))
        return self.token

    def join(self, name: str, key: str, secret: str, address: str) -> bool:
        """Bind a new worker's key to its name (and the address it may be probed at) if it proves
        the token; True if newly bound."""
        if self.keyring.workers.get(name) == key:
            return False  # joined before (a retried join): the secret may have been rotated since
        if not self.token.proves(secret):
            raise JoinRefused("wrong join token (it may have been rotated: ask for `cube join-token`)")
        try:
            return self.keyring.bind_worker(name, key, address)
        except KeyConflict as e:
            raise JoinRefused(str(e)) from None

    # ---- clients ------------------------------------------------------------------------------------
    def revoke_client(self, name: str) -> int:
        """Revoke every client credentials issued under `name`; how many."""
        return self.keyring.remove_clients(name)

    def issue(self, name: str, role: str) -> Credentials:
        pair = keys.Keypair.generate()
        self.keyring.add_client(pair.public_text, name, role)
        return Credentials(manager=self.addresses.api, events=self.addresses.events,
                           server_key=self.keypair.public_text, public=pair.public_text,
                           secret=pair.secret.decode("ascii"), name=name, role=role)

    def ensure_admin(self) -> str:
        """DATA_DIR/admin.credentials, issued on first start (again if it no longer works)."""
        path = os.path.join(self.data_dir, ADMIN_FILE)
        try:
            creds = Credentials.load(path)
            if (creds.server_key == self.keypair.public_text and self.keyring.role_of(creds.public) == ADMIN
                    and creds.manager == self.addresses.api and creds.events == self.addresses.events):
                return path
        except CredentialsError:
            pass
        self.issue("admin", ADMIN).save(path)
        return path

