"""HTTP to a service: one exchange, bounded retries with doubling waits, and the bytes on the wire metered.

Every request has a timeout; a refused connection, a timeout, a reset or an HTTP 5xx/429 is
retried ``retries`` times with waits ``backoff, 2 backoff, 4 backoff...``, then
:class:`ServiceUnavailable` says so. A refused key (401) or another refusal is a
:class:`ServiceError` at once. The meter counts the real HTTP bytes (request and response,
headers included) and requests.
"""
from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import urllib.parse


class ServiceError(RuntimeError):
    """The server answered, but not as a black box for this model must (refused, mismatched, incomplete)."""


class ServiceUnavailable(ServiceError):
    """The server did not answer (down, unreachable, too slow) after every retry."""


class Transport:
    """Requests to ``url`` (``http://host:port/v1``), metered into ``meter`` (requests, bytes up and down)."""

    def __init__(self, url: str, meter, *, api_key: str | None = None, timeout: float = 300.0, retries: int = 4,
                 backoff: float = 1.0):
        if retries < 0 or timeout <= 0:
            raise ValueError("retries must be at least 0 and timeout positive")
        parsed = urllib.parse.urlsplit(url.rstrip("/"))
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"the service URL must look like http://host:port/v1; got {url!r}")
        self.url, self.parsed = url.rstrip("/"), parsed
        self.meter, self.api_key = meter, api_key
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self.lock = threading.Lock()  # requests in flight update the meter from several threads

    def root(self) -> "Transport":
        """The same server without the API's path (vLLM's ``/tokenize`` sits beside ``/v1``), same meter."""
        other = Transport(urllib.parse.urlunsplit(self.parsed._replace(path="")), self.meter, api_key=self.api_key,
                          timeout=self.timeout, retries=self.retries, backoff=self.backoff)
        other.lock = self.lock
        return other

    def headers(self, body: bytes | None) -> dict:
        h = {"Host": self.parsed.netloc, "Accept": "application/json", "Connection": "close"}
        if body is not None:
            h.update({"Content-Type": "application/json", "Content-Length": str(len(body))})
        if self.api_key:
            h["Authorization"] = f"Bearer {self.api_key}"
        return h

    def once(self, method: str, path: str, body: bytes | None) -> tuple[int, bytes, int, int]:
        """One HTTP exchange: (status, body, bytes up, bytes down), headers counted."""
        cls = http.client.HTTPSConnection if self.parsed.scheme == "https" else http.client.HTTPConnection
        conn = cls(self.parsed.hostname, self.parsed.port, timeout=self.timeout)
        target = self.parsed.path + path
        headers = self.headers(body)
        up = len(f"{method} {target} HTTP/1.1\r\n") + sum(len(f"{k}: {v}\r\n") for k, v in headers.items()) + 2
        try:
            conn.request(method, target, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            down = len(data) + sum(len(f"{k}: {v}\r\n") for k, v in resp.getheaders()) + 17
            return resp.status, data, up + len(body or b""), down
        finally:
            conn.close()

    def request(self, method: str, path: str, payload: dict | None = None) -> dict:
        """A request with retries on transport failures and 5xx/429; a clear error otherwise."""
        body = None if payload is None else json.dumps(payload).encode()
        last = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                status, data, up, down = self.once(method, path, body)
            except (OSError, http.client.HTTPException, socket.timeout) as err:  # refused, reset, timed out
                last = f"{type(err).__name__}: {err}"
                continue
            with self.lock:
                self.meter.requests += 1
                self.meter.bytes_up += up
                self.meter.bytes_down += down
            if status in (429,) or status >= 500:
                last = f"HTTP {status}: {data[:300].decode(errors='replace')}"
                continue
            if status == 401:
                raise ServiceError(f"the service at {self.url} refused the API key (HTTP 401): "
                                   "give the key the server was started with (--api-key / $BBT_API_KEY)")
            if status != 200:
                raise ServiceError(f"the service at {self.url} refused {method} {path} (HTTP {status}): "
                                   f"{data[:500].decode(errors='replace')}")
            try:
                return json.loads(data)
            except ValueError as err:
                raise ServiceError(f"the service at {self.url} answered {path} with something other than JSON: "
                                   f"{data[:200]!r}") from err
        waited = sum(self.backoff * 2 ** i for i in range(self.retries))
        raise ServiceUnavailable(f"the service at {self.url} did not answer {method} {path} after "
                                 f"{self.retries + 1} tries over {waited:.0f} s of waits ({self.timeout:.0f} s "
                                 f"timeout each); last error: {last}. Start it (python -m bbt_mini serve) and, for "
                                 "a run with --checkpoint, continue with --resume")
