"""etcd v3 through aetcd (gRPC, asyncio), over a list of cluster members.

One member is used at a time; when a call fails for lack of connection (the member died, was
partitioned, or lost its quorum and times out), :meth:`Etcd.failover` moves to the next member
of the list. Keys and values are ``str`` here (etcd stores bytes; networking-spp's values are
UTF-8), and every read returns the revision it saw, so a watch can start right after it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import aetcd
import aetcd.exceptions
import aetcd.rtypes
from aetcd.utils import prefix_range_end

log = logging.getLogger("spp.agent.etcd")
T = TypeVar("T")

#: gRPC keep-alive, so a member that vanishes without closing the connection (a partition) is
#: noticed within ~15 s; etcd refuses pings more often than every 5 s.
_CHANNEL_OPTIONS = {
    "grpc.keepalive_time_ms": 10000,
    "grpc.keepalive_timeout_ms": 5000,
    "grpc.keepalive_permit_without_calls": 1,
    "grpc.http2.max_pings_without_data": 0,
    "grpc.initial_reconnect_backoff_ms": 200,
    "grpc.max_reconnect_backoff_ms": 2000,
}


class EtcdUnavailable(RuntimeError):
    """No answer from the member in use (down, partitioned, without quorum)."""


class Compacted(RuntimeError):
    """A watch asked for history etcd no longer has; read everything again."""

    def __init__(self, revision: int) -> None:
        super().__init__(f"revision compacted up to {revision}")
        self.revision = revision


def parse_endpoints(text: str) -> list[tuple[str, int]]:
    """``HOST:PORT[,HOST:PORT...]`` (``http://`` allowed, as etcdctl writes them)."""
    out = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        item = item.removeprefix("http://")
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"etcd endpoint {item!r} is not HOST:PORT")
        out.append((host.strip("[]"), int(port)))
    if not out:
        raise ValueError("no etcd endpoint given")
    return out


@dataclass(frozen=True)
class KV:
    key: str
    value: str
    mod_revision: int
    version: int = 1  # puts since the key was (re)created


@dataclass(frozen=True)
class Event:
    key: str
    value: str | None  # None for a delete
    revision: int


def _text(b: bytes) -> str:
    return b.decode("utf-8", errors="replace")


class Etcd:
    def __init__(self, endpoints: Sequence[tuple[str, int]], timeout: float = 5.0) -> None:
        if not endpoints:
            raise ValueError("no etcd endpoint")
        self.endpoints = list(endpoints)
        self.timeout = timeout
        self._index = 0
        self._client: aetcd.Client | None = None

    @property
    def endpoint(self) -> str:
        host, port = self.endpoints[self._index]
        return f"{host}:{port}"

    def _get_client(self) -> aetcd.Client:
        if self._client is None:
            host, port = self.endpoints[self._index]
            self._client = aetcd.Client(
                host=host, port=port, timeout=self.timeout, options=dict(_CHANNEL_OPTIONS)
            )
        return self._client

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await asyncio.wait_for(client.close(), 5)
            except Exception as e:  # a dead channel may fail to close; it is dropped anyway
                log.debug("closing etcd client: %s", e)

    async def failover(self) -> None:
        """Drop the connection and use the next member of the list."""
        await self.close()
        self._index = (self._index + 1) % len(self.endpoints)

    async def _call(self, op: Callable[[aetcd.Client], Awaitable[T]]) -> T:
        try:
            return await asyncio.wait_for(op(self._get_client()), self.timeout + 1)
        except aetcd.exceptions.RevisionCompactedError as e:
            raise Compacted(e.compacted_revision) from e
        except (
            aetcd.exceptions.ConnectionFailedError,
            aetcd.exceptions.ConnectionTimeoutError,
            aetcd.exceptions.InternalError,
            TimeoutError,
            OSError,
        ) as e:
            raise EtcdUnavailable(f"etcd {self.endpoint}: {e or type(e).__name__}") from e
        except aetcd.exceptions.ClientError as e:  # e.g. "etcdserver: no leader", unavailable
            raise EtcdUnavailable(f"etcd {self.endpoint}: {e}") from e

    async def call_any(self, op: Callable[[Etcd], Awaitable[T]], rounds: int = 2) -> T:
        """Run ``op(self)``, trying every member (``rounds`` times over) before giving up; for
        one-shot tools."""
        last: EtcdUnavailable | None = None
        for attempt in range(rounds * len(self.endpoints)):
            try:
                return await op(self)
            except EtcdUnavailable as e:
                last = e
                log.info("%s; trying the next member", e)
                await self.failover()
                await asyncio.sleep(min(0.2 * attempt, 1.0))
        assert last is not None
        raise last

    # -- key/value ---------------------------------------------------------------------------

    async def get(self, key: str) -> str | None:
        got = await self._call(lambda c: c.get(key.encode()))
        return None if got is None else _text(got.value)

    async def get_prefix(self, prefix: str) -> tuple[list[KV], int]:
        """Every key under ``prefix`` in key order, and the store's revision of this read."""
        got = await self._call(lambda c: c.get_prefix(prefix.encode()))
        kvs = [KV(_text(kv.key), _text(kv.value), kv.mod_revision, kv.version) for kv in got]
        return kvs, got.header.revision

    async def revision(self) -> int:
        _, rev = await self.get_prefix("/spp/openstack/\x00none")
        return rev

    async def put(self, key: str, value: str, lease: Any = None) -> int:
        got = await self._call(lambda c: c.put(key.encode(), value.encode(), lease=lease))
        return int(got.header.revision)

    async def delete(self, key: str) -> None:
        await self._call(lambda c: c.delete(key.encode()))

    async def delete_prefix(self, prefix: str) -> None:
        await self._call(lambda c: c.delete_prefix(prefix.encode()))

    async def replace(self, key: str, old: str, new: str) -> bool:
        """Compare-and-swap on the value, as networking-spp's ``replace``."""
        return bool(await self._call(lambda c: c.replace(key.encode(), old.encode(), new.encode())))

    async def txn(
        self,
        compare: Callable[[Any], list[Any]],
        success: Callable[[Any], list[Any]],
        failure: Callable[[Any], list[Any]] | None = None,
    ) -> bool:
        """A transaction built from the client's ``transactions`` helpers: ``compare(t)``,
        ``success(t)`` and ``failure(t)`` get it and return lists."""

        async def run(c: aetcd.Client) -> bool:
            t = c.transactions
            ok, _ = await c.transaction(compare(t), success(t), failure(t) if failure else [])
            return bool(ok)

        return await self._call(run)

    async def lease(self, ttl: int) -> Any:
        return await self._call(lambda c: c.lease(ttl))

    async def refresh(self, lease: Any) -> None:
        """Keep ``lease`` alive; EtcdUnavailable once it has expired (we were cut off too long)."""
        reply = await self._call(lambda c: c.refresh_lease(lease.id))
        if reply is None or reply.TTL <= 0:
            raise EtcdUnavailable(f"etcd {self.endpoint}: lease {lease.id:x} expired")

    async def revoke(self, lease: Any) -> None:
        """End ``lease`` now: the keys under it go at once, not when it would have expired."""
        await self._call(lambda c: c.revoke_lease(lease.id))

    async def compact(self, revision: int) -> None:
        await self._call(lambda c: c.compact(revision, physical=True))

    # -- watching ----------------------------------------------------------------------------

    async def watch_prefix(self, prefix: str, start_revision: int) -> AsyncIterator[Event]:
        """Events under ``prefix`` from ``start_revision`` on; ends with EtcdUnavailable or
        Compacted, never silently."""
        end = prefix_range_end(prefix.encode())
        watch = await self._call(
            lambda c: c.watch(prefix.encode(), range_end=end, start_revision=start_revision)
        )
        try:
            it = watch.__aiter__()
            while True:
                try:
                    ev = await it.__anext__()
                except StopAsyncIteration:
                    raise EtcdUnavailable(f"etcd {self.endpoint}: watch ended") from None
                except aetcd.exceptions.RevisionCompactedError as e:
                    raise Compacted(e.compacted_revision) from e
                except aetcd.exceptions.ClientError as e:
                    raise EtcdUnavailable(f"etcd {self.endpoint}: watch failed: {e}") from e
                value = None if ev.kind == aetcd.rtypes.EventKind.DELETE else _text(ev.kv.value)
                yield Event(_text(ev.kv.key), value, ev.kv.mod_revision)
        finally:
            try:
                await asyncio.wait_for(watch.cancel(), 2)
            except Exception as e:  # the stream may be gone already
                log.debug("cancelling watch: %s", e)

    async def wait_for_value(self, key: str, wanted: str, timeout: float) -> bool:
        """Whether ``key`` holds ``wanted`` within ``timeout`` s."""
        return await self.wait_for(key, lambda value: value == wanted, timeout)

    async def wait_for(self, key: str, test: Callable[[str | None], bool], timeout: float) -> bool:
        """Whether ``key``'s value (None: absent) passes ``test`` within ``timeout`` s.

        It reads first, then watches from the read's revision on (no gap, unlike the original
        driver's watch_once). A member lost, a leader election or a compaction on the way only
        costs a failover and a fresh read: a one-shot tool must not fail (and its caller retry a
        plug already half-written) because the cluster changed leader while it waited.
        """

        async def once() -> bool:
            kvs, rev = await self.get_prefix(key)
            if test(next((kv.value for kv in kvs if kv.key == key), None)):
                return True
            async for ev in self.watch_prefix(key, rev + 1):
                if ev.key == key and test(ev.value):
                    return True
            return False

        async def wait() -> bool:
            attempt = 0
            while True:
                try:
                    return await once()
                except (EtcdUnavailable, Compacted) as e:
                    log.info("waiting for %s: %s; reading again", key, e)
                    if isinstance(e, EtcdUnavailable):
                        await self.failover()
                    await asyncio.sleep(min(0.2 * attempt, 1.0))
                    attempt += 1

        try:
            return await asyncio.wait_for(wait(), timeout)
        except TimeoutError:
            return False
