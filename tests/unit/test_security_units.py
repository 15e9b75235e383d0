"""Pure units of cube/security: tokens, the keyring, credentials files, key files, throttled logs."""
from __future__ import annotations

import json
import logging
import os
import stat

import pytest
import zmq

from cube.logs import Throttled
from cube.security import keys, token
from cube.security.authority import Addresses, Authority, JoinRefused
from cube.security.credentials import Credentials, CredentialsError, locate
from cube.security.keyring import ADMIN, READ_ONLY, KeyConflict, Keyring
from cube.security.membership import Membership, MembershipError


def _key() -> str:
    return zmq.curve_keypair()[0].decode()


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# ---- join tokens ---------------------------------------------------------------------------------
def test_token_round_trips_and_pins_the_manager_key():
    public, _ = zmq.curve_keypair()
    t = token.new_token(public)
    text = str(t)
    assert text.startswith("CUBETKN-1-") and len(text.split("-")) == 4
    parsed = token.JoinToken.parse(text + "\n")
    assert parsed.manager_key == public and parsed.proves(t.secret) and not parsed.proves("0" * 32)


@pytest.mark.parametrize("text", ["", "garbage", "CUBETKN-1-abc-def", "CUBETKN-2-" + "0" * 64 + "-" + "0" * 32,
                                  "CUBETKN-1-" + "g" * 64 + "-" + "0" * 32])
def test_a_malformed_token_is_refused_with_a_hint(text):
    with pytest.raises(token.TokenError, match="cube join-token"):
        token.JoinToken.parse(text)


def test_token_file_is_private_and_kept_across_starts(tmp_path):
    public, _ = zmq.curve_keypair()
    path = str(tmp_path / "join-token")
    first = token.load_or_create(path, public)
    assert mode(path) == 0o600
    assert token.load_or_create(path, public) == first
    other, _ = zmq.curve_keypair()
    assert token.load_or_create(path, other).manager_key == other  # a token for another key is replaced


# ---- key files -------------------------------------------------------------------------------------
def test_keypair_is_made_once_in_a_private_dir(tmp_path):
    pair = keys.load_or_create(str(tmp_path), "manager")
    again = keys.load_or_create(str(tmp_path), "manager")
    assert pair == again and keys.valid_key(pair.public_text)
    assert mode(tmp_path / "curve") == 0o700
    assert mode(tmp_path / "curve" / "manager.key_secret") == 0o600
    assert not keys.valid_key("short") and not keys.valid_key("~" * 40)


# ---- the keyring -------------------------------------------------------------------------------------
def test_keyring_binds_a_name_to_one_key_for_good(tmp_path):
    ring = Keyring(str(tmp_path / "keyring.json"))
    a, b = _key(), _key()
    assert ring.bind_worker("w1", a, "10.0.0.1") is True
    assert ring.bind_worker("w1", a, "10.0.0.1") is False  # a repeated join
    with pytest.raises(KeyConflict, match="already joined with another key"):
        ring.bind_worker("w1", b)
    with pytest.raises(KeyConflict, match="already joined as worker 'w1'"):
        ring.bind_worker("w2", a)
    assert ring.worker_for(a) == "w1" and ring.worker_for(b) is None
    assert mode(ring.path) == 0o600
    assert ring.revoke_worker("w1") == a
    assert ring.worker_for(a) is None
    with pytest.raises(KeyConflict, match="revoked"):
        ring.bind_worker("w1", a)
    assert ring.bind_worker("w1", b) is True  # the name is free again, for a new key


def test_a_reader_sees_the_writers_changes(tmp_path):
    path = str(tmp_path / "keyring.json")
    writer, reader = Keyring(path), Keyring(path)
    key = _key()
    writer.bind_worker("w1", key)
    assert reader.worker_for(key) is None
    assert reader.reload() is True and reader.worker_for(key) == "w1"
    assert reader.reload() is False  # unchanged: not read again
    writer.add_client(_key(), "ro", READ_ONLY)
    assert reader.reload() is True and len(reader.clients) == 1


def test_unknown_roles_are_refused(tmp_path):
    with pytest.raises(ValueError, match="role must be one of"):
        Keyring(str(tmp_path / "k.json")).add_client(_key(), "x", "root")


# ---- the authority -------------------------------------------------------------------------------------
def authority(tmp_path) -> Authority:
    return Authority(str(tmp_path / "manager"), Addresses("127.0.0.1:5555", "127.0.0.1:5558", "127.0.0.1:5556"))


def test_join_needs_the_token_and_survives_its_rotation(tmp_path):
    auth = authority(tmp_path)
    key = _key()
    with pytest.raises(JoinRefused, match="wrong join token"):
        auth.join("w1", key, "0" * 32, "127.0.0.1")
    assert auth.join("w1", key, auth.token.secret, "127.0.0.1") is True
    old = auth.token.secret
    auth.rotate_token()
    assert auth.token.secret != old
    assert auth.join("w1", key, old, "127.0.0.1") is False  # already joined: not disturbed
    with pytest.raises(JoinRefused, match="wrong join token"):
        auth.join("w2", _key(), old, "127.0.0.1")
    assert auth.join_command().startswith("CUBE_WORKER_JOIN=CUBETKN-1-")  # not in the process list


def test_admin_credentials_are_issued_once_and_work(tmp_path):
    auth = authority(tmp_path)
    path = auth.ensure_admin()
    creds = Credentials.load(path)
    assert mode(path) == 0o600 and creds.role == ADMIN and auth.keyring.role_of(creds.public) == ADMIN
    assert auth.ensure_admin() == path and Credentials.load(path) == creds  # kept across starts
    assert mode(tmp_path / "manager") == 0o700


# ---- credentials files ------------------------------------------------------------------------------------
def test_credentials_errors_are_one_clear_line(tmp_path):
    with pytest.raises(CredentialsError, match="does not exist"):
        Credentials.load(str(tmp_path / "nope"))
    bad = tmp_path / "bad"
    bad.write_text("{not json")
    with pytest.raises(CredentialsError, match="cannot read credentials file"):
        Credentials.load(str(bad))
    other = tmp_path / "other"
    other.write_text(json.dumps({"kind": "something"}))
    with pytest.raises(CredentialsError, match="not a Cube credentials file"):
        Credentials.load(str(other))
    partial = tmp_path / "partial"
    partial.write_text(json.dumps({"kind": "cube-credentials", "manager": "x"}))
    with pytest.raises(CredentialsError, match="has no field"):
        Credentials.load(str(partial))


def test_credentials_are_found_by_flag_then_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("CUBE_CREDENTIALS", raising=False)
    assert locate("") is None
    monkeypatch.setenv("CUBE_CREDENTIALS", "/from/env")
    assert locate("") == "/from/env" and locate("/from/flag") == "/from/flag"
    monkeypatch.delenv("CUBE_CREDENTIALS")
    default = tmp_path / ".config" / "cube" / "credentials"
    default.parent.mkdir(parents=True)
    default.write_text("{}")
    assert locate("") == str(default)


# ---- a worker's membership ------------------------------------------------------------------------------------
def test_a_worker_that_never_joined_is_told_how(tmp_path):
    with pytest.raises(MembershipError, match="--join TOKEN"):
        Membership(str(tmp_path))
    with pytest.raises(MembershipError, match="not a Cube join token"):
        Membership(str(tmp_path), "nonsense")


def test_a_worker_remembers_the_manager_it_joined(tmp_path):
    public, _ = zmq.curve_keypair()
    t = str(token.new_token(public))
    m = Membership(str(tmp_path), t)
    assert m.needs_join("w1") and m.join_secret()
    m.joined("w1")
    again = Membership(str(tmp_path))  # restarted without a token
    assert again.manager_key == public and not again.needs_join("w1") and again.join_secret() is None
    assert again.keypair == m.keypair


# ---- throttled logs -------------------------------------------------------------------------------------
def test_throttled_logs_a_burst_then_counts(caplog):
    throttled = Throttled(logging.getLogger("t"), per=60.0, burst=3)
    with caplog.at_level(logging.WARNING, logger="t"):
        for i in range(100):
            throttled.warning("bad", "bad frame %d", i)
        throttled.warning("other", "another kind")
    assert [r.getMessage() for r in caplog.records] == ["bad frame 0", "bad frame 1", "bad frame 2", "another kind"]
