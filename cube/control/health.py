"""HTTP health probes, run off the Manager's loop so a slow task never stalls it."""
from __future__ import annotations

import http.client
from dataclasses import dataclass


@dataclass
class ProbeResult:
    ok: bool
    detail: str


def probe(host: str, port: int, path: str, timeout: float) -> ProbeResult:
    """GET http://host:port/path; healthy only on HTTP 200 (as in the book)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"User-Agent": "cube-health"})
        status = conn.getresponse().status
        return ProbeResult(status == 200, f"HTTP {status}")
    except (OSError, http.client.HTTPException) as e:
        return ProbeResult(False, f"{type(e).__name__}: {e}" if str(e) else type(e).__name__)
    finally:
        conn.close()
