"""Scripted failures and the server plumbing shared by the fake SIEMs.

A fake answers each request in this order:

1. record it (headers, body sizes) so a test can see what was sent, even if it then fails;
2. hold it while the script is stalled (backpressure tests);
3. take the next planned step, if any, else the always-on rule, else the random-failure rule;
4. if no step applies (or the step was a :class:`Hang` the client outlived), apply the
   vendor's rules and record what was accepted.

Scripted answers come before the vendor rules, so a planned 503 is answered even to a
request with a bad token: the fake plays a proxy or an overloaded front end.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import struct
import zlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from types import TracebackType
from typing import Any, Self

from aiohttp import web
from multidict import CIMultiDict

__all__ = ["FakeServer", "Hang", "Reset", "Respond", "Script", "SeenRequest", "Step"]


@dataclass(frozen=True)
class Respond:
    """Answer with this status instead of applying the vendor rules.

    Arguments:
        status: HTTP status.
        body: a dict or list (sent as JSON), a str (sent as text), or None for the fake's
            usual body for that status (e.g. HEC 503 -> ``{"text":"Server is busy","code":9}``).
        retry_after: value of the ``Retry-After`` header (seconds), or None for no header.
    """

    status: int
    body: Any = None
    retry_after: int | float | str | None = None


@dataclass(frozen=True)
class Reset:
    """Drop the connection without an answer (TCP RST), after the body was read."""


@dataclass(frozen=True)
class Hang:
    """Sleep ``secs`` seconds, then apply the vendor rules if the client is still there.

    If the client gave up meanwhile, nothing is accepted: the request was lost before the
    destination looked at it, so a retry must not count as a duplicate.
    """

    secs: float


Step = Respond | Reset | Hang


class Script:
    """Planned answers for one route family of a fake.

    Arguments:
        seed: seed of the random generator used by :meth:`fail_randomly`, so a failing run
            replays the same sequence.
    """

    def __init__(self, *, seed: int = 0) -> None:
        self._planned: deque[Step] = deque()
        self._always: Step | None = None
        self._random_rate = 0.0
        self._random_step: Step = Respond(503)
        self._random = random.Random(seed)
        self._open = asyncio.Event()
        self._open.set()
        self._stopping = asyncio.Event()
        self.held = 0
        """Requests currently held by :meth:`stall`."""

    def plan(self, *steps: Step) -> None:
        """Queue steps; each request consumes one, in order."""
        self._planned.extend(steps)

    def respond(
        self,
        status: int,
        body: Any = None,
        *,
        retry_after: int | float | str | None = None,
        times: int = 1,
    ) -> None:
        """Queue ``times`` answers with this status (see :class:`Respond`)."""
        self.plan(*[Respond(status, body, retry_after)] * times)

    def reset(self, *, times: int = 1) -> None:
        """Queue ``times`` connection resets."""
        self.plan(*[Reset()] * times)

    def hang(self, secs: float, *, times: int = 1) -> None:
        """Queue ``times`` hangs of ``secs`` seconds each (see :class:`Hang`)."""
        self.plan(*[Hang(secs)] * times)

    def always(self, step: Step | None) -> None:
        """Apply ``step`` to every request with no planned step; None turns the rule off."""
        self._always = step

    def fail_randomly(self, rate: float, step: Step | None = None) -> None:
        """Answer ``step`` (default 503) to a seeded-random ``rate`` (0..1) of requests."""
        self._random_rate = rate
        self._random_step = step if step is not None else Respond(503)

    def stall(self) -> None:
        """Hold every request from now on until :meth:`release`."""
        self._open.clear()

    def release(self) -> None:
        """Let held requests (and later ones) through."""
        self._open.set()

    def clear(self) -> None:
        """Forget planned steps and rules; release held requests."""
        self._planned.clear()
        self._always = None
        self._random_rate = 0.0
        self.release()

    @property
    def pending(self) -> int:
        """Planned steps not yet consumed."""
        return len(self._planned)

    def shutdown(self) -> None:
        """Wake every held or hanging request so the server can stop quickly."""
        self._stopping.set()
        self._open.set()

    def reopen(self) -> None:
        """Let hangs hang again after a restart."""
        self._stopping.clear()

    async def next_step(self) -> Step | None:
        """Wait out a stall, then return the step for this request (None: vendor rules)."""
        if not self._open.is_set():
            self.held += 1
            try:
                await self._open.wait()
            finally:
                self.held -= 1
        step: Step | None
        if self._planned:
            step = self._planned.popleft()
        elif self._always is not None:
            step = self._always
        elif self._random_rate and self._random.random() < self._random_rate:
            step = self._random_step
        else:
            step = None
        if isinstance(step, Hang):
            try:
                await asyncio.wait_for(self._stopping.wait(), step.secs)
            except TimeoutError:
                pass
        return step


@dataclass
class SeenRequest:
    """One request as the fake received it.

    ``raw_size`` is the body size on the wire (compressed if gzip); ``body`` the decompressed
    body, recorded whatever the answer (empty if it could not be decompressed). ``status``
    is None until answered, and stays None for a reset or a request whose client left during
    a hang. ``done`` turns true when the fake has finished with the request, whatever the
    outcome; ``accepted`` counts the events or logs it kept from it.
    """

    method: str
    path: str
    headers: CIMultiDict[str]
    raw_size: int
    body: bytes = b""
    status: int | None = None
    reply: bytes = b""
    done: bool = False
    accepted: int = 0


class BodyError(Exception):
    """The body cannot be decoded: answer ``status`` (413 or 415) or the vendor's 400."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def decode_body(
    raw: bytes, encoding: str, *, allowed: tuple[str, ...], limit: int = 1 << 30
) -> bytes:
    """Decompress ``raw`` per its Content-Encoding, refusing more than ``limit`` bytes out."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        if len(raw) > limit:
            raise BodyError(413)
        return raw
    if encoding not in allowed:
        raise BodyError(415)
    # wbits 16+15 reads a gzip wrapper, 15 a zlib one (HTTP "deflate" means zlib).
    inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        body = inflater.decompress(raw, limit + 1)
    except zlib.error:
        raise BodyError(400) from None
    if len(body) > limit:
        raise BodyError(413)
    if not inflater.eof:
        raise BodyError(400)
    return body


def json_response(
    status: int, body: Any, *, retry_after: int | float | str | None = None
) -> web.Response:
    """A response with a JSON (or, for a str, plain-text) body."""
    headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
    if isinstance(body, str):
        return web.Response(status=status, text=body, headers=headers)
    return web.Response(
        status=status,
        body=json.dumps(body).encode(),
        content_type="application/json",
        headers=headers,
    )


def _client_left(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _reset_connection(request: web.Request) -> None:
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # Linger 0 turns close() into an RST, what a crashed proxy or load balancer sends.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


Handler = Callable[[web.Request, SeenRequest], Awaitable[web.Response]]


class FakeServer:
    """An aiohttp server on 127.0.0.1, port chosen by the kernel; subclasses add routes.

    Use ``await fake.start()`` / ``await fake.stop()`` or ``async with Fake() as fake:``;
    ``fake.url`` is ``http://127.0.0.1:<port>`` once started. A restart binds the same port
    and keeps the records, so stop/start plays a destination outage.
    """

    def __init__(self) -> None:
        self.requests: list[SeenRequest] = []
        self.port = 0
        self._scripts: list[Script] = []
        self._runner: web.AppRunner | None = None
        self._changed = asyncio.Condition()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _routes(self) -> list[web.RouteDef]:
        raise NotImplementedError

    def _default_body(self, status: int) -> Any:
        return {"text": HTTPStatus(status).phrase}

    def _new_script(self, seed: int) -> Script:
        script = Script(seed=seed)
        self._scripts.append(script)
        return script

    async def start(self) -> None:
        # Big enough for any test body; the vendor limits (413) are checked by the fakes.
        app = web.Application(client_max_size=1 << 30)
        app.add_routes(self._routes())
        # auto_decompress off: the fake sees the wire size and decodes gzip itself.
        runner = web.AppRunner(
            app, auto_decompress=False, access_log=None, handle_signals=False, shutdown_timeout=2.0
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
        except OSError:
            await runner.cleanup()
            raise
        for script in self._scripts:
            script.reopen()
        self._runner = runner
        self.port = runner.addresses[0][1]

    async def stop(self) -> None:
        for script in self._scripts:
            script.shutdown()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def wait_until(self, predicate: Callable[[], bool], *, timeout_secs: float = 5.0) -> None:
        """Wait until ``predicate()`` holds; it is re-checked whenever a request comes or goes."""
        async with asyncio.timeout(timeout_secs), self._changed:
            await self._changed.wait_for(predicate)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _serve(
        self, request: web.Request, script: Script, handle: Handler
    ) -> web.StreamResponse:
        raw = await request.read()
        seen = SeenRequest(request.method, request.path, CIMultiDict(request.headers), len(raw))
        try:
            seen.body = decode_body(
                raw, request.headers.get("Content-Encoding", ""), allowed=("gzip", "deflate")
            )
        except BodyError:
            pass  # kept empty; the vendor rules answer the undecodable body
        self.requests.append(seen)
        await self._notify()
        step = await script.next_step()
        if isinstance(step, Reset) or _client_left(request):
            _reset_connection(request)
            seen.done = True
            await self._notify()
            # Nobody reads this answer: the connection is gone.
            return web.Response(status=499)
        if isinstance(step, Respond):
            body = step.body if step.body is not None else self._default_body(step.status)
            response = json_response(step.status, body, retry_after=step.retry_after)
        else:
            response = await handle(request, seen)
        seen.status = response.status
        seen.reply = bytes(response.body) if isinstance(response.body, bytes | bytearray) else b""
        seen.done = True
        await self._notify()
        return response
