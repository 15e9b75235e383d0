"""The Store on etcd (v3, through its gRPC gateway, with the etcd3gw client): docs/ha.md.

Key layout: `<prefix><namespace>\\x00<key>` (prefix `/cube/` by default), values msgpack as in
LevelDB. Namespaces cannot contain NUL (Store.check), so `<prefix><ns>\\x00` is exactly the keys
of one namespace, and etcd's byte order is LevelDB's (UTF-8 keeps code-point order).

Durability: a write is acknowledged when etcd answered it, i.e. once it is committed by a
majority of the members (each synced its WAL). A batch is one etcd transaction: all or nothing.

Failures keep the Store's meaning (cube/store/base.py): a write etcd refused (too many ops, too
large) is a StoreError, applied nowhere; a write that could not be sent to any member (every
connection refused) is StoreUnavailable, not applied; a write sent but not answered (a timeout,
a dropped connection, etcd without a leader) is StoreInDoubt: it may still be committed, so its
client must read it back (the Store actor then sends no answer, which its client already treats
as "in doubt").

Endpoints are tried in order, moving on from one that cannot be reached; reads are linearizable
(served through the etcd leader), so a read never misses an acknowledged write.

TLS (docs/ha.md, "Security"): with `https://` endpoints the client checks etcd's certificate
against the CA given (`EtcdTLS.cacert`) and presents its own client certificate, so only the
managers can read the secrets etcd holds. A TLS handshake that fails was never a request: a
write refused that way is StoreUnavailable (not applied), not StoreInDoubt.
"""
from __future__ import annotations

import base64
import logging
from dataclasses import dataclass
from typing import Any, Iterable
from urllib.parse import urlsplit

from cube.store.base import Op, Store, StoreError, StoreFenced, StoreInDoubt, StoreUnavailable
from cube.store.base import pack, unpack

log = logging.getLogger(__name__)

PREFIX = "/cube/"
SEP = b"\x00"
TIMEOUT = 2.0  # seconds for one HTTP request to one member


# What a group commit or a prune may put in one transaction (docs/ha.md: start etcd with these).
NEEDED_TXN_OPS = 10_000
NEEDED_REQUEST_BYTES = 10 << 20

@dataclass(frozen=True)
class EtcdTLS:
    """TLS to etcd (cube-manager's --etcd-cacert, --etcd-cert, --etcd-key): the CA that signed
    etcd's server certificate, and this manager's client certificate and key (PEM files)."""
    cacert: str = ""
    cert: str = ""
    key: str = ""


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


def prefix_end(key: bytes) -> bytes:
    """The smallest key greater than every key starting with `key` (etcd's range_end)."""
    k = bytearray(key)
    while k:
        if k[-1] < 0xFF:
            k[-1] += 1
            return bytes(k)
        k.pop()
    return b"\x00"  # every key


def parse_endpoints(text: str) -> list[tuple[str, str, int]]:
    """`http://H1:2379,http://H2:2379` -> [(scheme, host, port)]; a bare H:P means http."""
    out = []
    for item in (p.strip() for p in text.split(",")):
        if not item:
            continue
        u = urlsplit(item if "://" in item else "http://" + item)
        if u.scheme not in ("http", "https") or not u.hostname or not u.port:
            raise StoreError(f"etcd endpoint {item!r} is not http://HOST:PORT")
        out.append((u.scheme, u.hostname, u.port))
    if not out:
        raise StoreError("the etcd store needs at least one endpoint (--etcd http://HOST:2379,...)")
    return out


class Etcd:
    """etcd3gw clients for several members: a request goes to the current one and moves on to
    the next while a member cannot be reached. Shared by the Store and the election."""

    def __init__(self, endpoints: str, timeout: float = TIMEOUT, tls: EtcdTLS | None = None):
        import etcd3gw
        from etcd3gw import exceptions
        self.errors = exceptions
        self.clients = [etcd3gw.Etcd3Client(host=h, port=p, protocol=s, timeout=timeout, api_path="/v3/",
                                            session=_session(tls))
                        for s, h, p in parse_endpoints(endpoints)]
        self.current = 0

    @property
    def url(self) -> str:
        return self.clients[self.current].base_url

    def call(self, path: str, body: dict[str, Any], write: bool = False) -> dict[str, Any]:
        """POST one gateway request (`/kv/range`, `/kv/txn`, `/lease/grant`, ...). A `write` that
        may have reached etcd is not sent again (StoreInDoubt), but the next request goes to the
        next member: the one that failed may be cut off from the others."""
        ex = self.errors
        last = ""
        for i in range(len(self.clients)):
            n = (self.current + i) % len(self.clients)
            client = self.clients[n]
            try:
                reply = client.post(client.get_url(path), json=body)
                self.current = n
                return reply
            except (ex.ConnectionFailedError, ex.ConnectionTimeoutError, ex.InternalServerError) as e:
                detail = _short(str(e.detail_text or e))
                if write and not _not_sent(detail):
                    self.current = (n + 1) % len(self.clients)
                    raise StoreInDoubt(f"etcd {client.base_url} did not answer {path}: {detail}") from None
                last = f"{client.base_url}: {detail}"
            except ex.Etcd3Exception as e:  # refused (invalid argument, too large): not applied
                raise StoreError(f"etcd refused {path}: {_short(str(e.detail_text or e))}") from None
            log.debug("etcd: %s", last)
        raise StoreUnavailable(f"no etcd member answered {path} ({last})")


def _session(tls: EtcdTLS | None) -> Any:
    """A requests session that checks etcd against `tls.cacert` and presents the client pair.
    (etcd3gw's own ca_cert sets session.verify, which REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE in
    the environment silently replace, per request: the CA given must win.)"""
    import requests

    class Pinned(requests.Session):
        def merge_environment_settings(self, url, proxies, stream, verify, cert):  # type: ignore[override]
            settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
            settings["verify"] = self.verify
            return settings

    if tls is None or not tls.cacert:
        return requests.Session()
    session = Pinned()
    session.verify = tls.cacert
    if tls.cert and tls.key:
        session.cert = (tls.cert, tls.key)
    return session


def _not_sent(detail: str) -> bool:
    """A connection that was never made (nothing listens, no route): the request did not leave."""
    return tls_refused(detail) or any(
        s in detail for s in ("Connection refused", "NewConnectionError", "No route to host",
                              "Name or service not known", "ConnectTimeout", "connect timeout"))


def tls_refused(detail: str) -> bool:
    """The TLS handshake failed (a certificate refused either way, plain HTTP against TLS): etcd
    never read the request. Only the handshake's failures: an error after it (an EOF: etcd may
    have died with the request) proves nothing."""
    return "SSLError" in detail and any(s in detail for s in (
        "CERTIFICATE_VERIFY_FAILED", "certificate required", "CERTIFICATE_REQUIRED", "BAD_CERTIFICATE",
        "UNKNOWN_CA", "WRONG_VERSION_NUMBER", "certificate verify failed", "handshake operation timed out"))


def _short(text: str) -> str:
    return text.strip().replace("\n", " ")[:200]


class EtcdStore(Store):
    def __init__(self, endpoints: str, prefix: str = PREFIX, etcd: Etcd | None = None,
                 tls: EtcdTLS | None = None):
        self.etcd = etcd or Etcd(endpoints, tls=tls)
        self.prefix = prefix.encode()
        self.leader_key = self.prefix + b"leader"  # the election's key (cube/ha/election.py)

    def _key(self, ns: str, key: str) -> bytes:
        Store.check(ns, key)
        return self.prefix + ns.encode() + SEP + key.encode()

    def put(self, ns: str, key: str, value: Any) -> None:
        self.batch([("put", ns, key, value)])

    def delete(self, ns: str, key: str) -> None:
        self.batch([("delete", ns, key, None)])

    def get(self, ns: str, key: str) -> Any | None:
        reply = self.etcd.call("/kv/range", {"key": b64(self._key(ns, key))})
        kvs = reply.get("kvs") or []
        return unpack(unb64(kvs[0].get("value", ""))) if kvs else None

    def list(self, ns: str, prefix: str = "", after: str = "", limit: int | None = None) -> list[tuple[str, Any]]:
        start = self._key(ns, prefix)
        end = prefix_end(start)
        lo = start
        if after:
            past = self._key(ns, after) + b"\x00"  # the first key greater than `after`
            lo = max(start, past)
        if lo >= end:
            return []
        body: dict[str, Any] = {"key": b64(lo), "range_end": b64(end)}
        if limit is not None:
            if limit <= 0:
                return []
            body["limit"] = limit
        skip = len(self.prefix) + len(ns.encode()) + 1
        reply = self.etcd.call("/kv/range", body)
        return [(unb64(kv["key"])[skip:].decode(), unpack(unb64(kv.get("value", ""))))
                for kv in reply.get("kvs") or []]

    def create(self, ns: str, key: str, value: Any) -> bool:
        """Put `value` only if the key does not exist (one transaction); True if it was put."""
        k = b64(self._key(ns, key))
        reply = self.etcd.call("/kv/txn", {
            "compare": [{"key": k, "target": "CREATE", "result": "EQUAL", "create_revision": 0}],
            "success": [{"request_put": {"key": k, "value": b64(pack(value))}}], "failure": []}, write=True)
        return bool(reply.get("succeeded"))

    def count(self, ns: str) -> int:
        start = self._key(ns, "")
        reply = self.etcd.call("/kv/range", {"key": b64(start), "range_end": b64(prefix_end(start)),
                                             "count_only": True})
        return int(reply.get("count") or 0)

    def check_limits(self, ops: int = NEEDED_TXN_OPS, size: int = NEEDED_REQUEST_BYTES) -> None:
        """Refuse to run on an etcd whose limits a group commit would pass (etcd's defaults: 128
        operations and 1.5 MiB a request): every write of such a group would be refused. Asks with
        a transaction whose compare cannot hold, so nothing of it is ever applied; ValueError says
        which flag etcd needs. An etcd that cannot be reached now is not a verdict: nothing raised."""
        probe = b64(self.prefix + b"\0limits-probe")
        never = [{"key": probe, "target": "VERSION", "result": "LESS", "version": 0}]
        many = [{"request_range": {"key": probe}}] * ops
        big = [{"request_put": {"key": probe, "value": b64(b"\0" * (size * 3 // 4 - 4096))}}]
        for what, body, flag in (("operations", {"compare": never, "success": many, "failure": []},
                                  f"--max-txn-ops {ops}"),
                                 ("bytes", {"compare": never, "success": big, "failure": []},
                                  f"--max-request-bytes {size}")):
            try:
                self.etcd.call("/kv/txn", body, write=False)
            except StoreUnavailable as e:
                if "SSLError" in str(e):  # a certificate problem does not fix itself: say so now
                    raise ValueError(f"etcd refused the TLS connection or was refused ({e}); check --etcd-cacert, "
                                     f"--etcd-cert and --etcd-key (docs/ha.md, \"Security\")") from None
                return
            except StoreError as e:
                raise ValueError(f"etcd at {self.etcd.url} refuses a transaction of that many {what} ({e}); "
                                 f"Cube's group commits need etcd started with at least {flag} (docs/ha.md)") from None

    def batch(self, ops: Iterable[Op], term: int = 0) -> None:
        """All of `ops` or none; with `term`, only while the leader key is that leader's
        (its create revision is the term: docs/ha.md), else StoreFenced and nothing applied."""
        txn = []
        for op, ns, key, value in ops:
            k = self._key(ns, key)
            if op == "put":
                txn.append({"request_put": {"key": b64(k), "value": b64(pack(value))}})
            elif op == "delete":
                txn.append({"request_delete_range": {"key": b64(k)}})
            elif op == "delete_prefix":  # e.g. every event of a pruned task: one range delete
                txn.append({"request_delete_range": {"key": b64(k), "range_end": b64(prefix_end(k))}})
            else:
                raise StoreError(f"unknown batch op {op!r}")
        if not txn:
            return
        compare = []
        if term:
            compare = [{"key": b64(self.leader_key), "target": "CREATE", "result": "EQUAL", "create_revision": term}]
        reply = self.etcd.call("/kv/txn", {"compare": compare, "success": txn, "failure": []}, write=True)
        if term and not reply.get("succeeded"):
            raise StoreFenced(f"not leader: term {term} is over (another manager leads); the write was not applied")
