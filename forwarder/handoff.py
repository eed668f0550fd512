"""Stream connections accepted once, by the supervisor, and handed to the workers in turn.

With ``SO_REUSEPORT`` the kernel picks a worker per connection by a hash of its addresses, so
four clients land 3-1 or 4-0 on two workers as often as 2-2, and when the work is CPU-bound
(a policy, say) one worker runs flat out while the other idles. Here the supervisor listens
on every TCP-based ingest port itself, accepts, and passes each new connection's descriptor
(``SCM_RIGHTS`` over a ``SOCK_SEQPACKET`` pair, one message per connection carrying the
source's name) to the next ready worker, round robin. Connections waiting in the backlog
while a worker restarts stay in the supervisor's queue instead of dying with the worker.

UDP (syslog ``mode: udp``) has no connections to hand and stays on ``SO_REUSEPORT``; so does a
source added by a reload, which the supervisor does not listen for.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable, Sequence

import structlog

from forwarder.config import format_address, parse_address

__all__ = ["Listener", "Receiver", "channel_pair", "hand", "serve"]

log = structlog.get_logger()

# A source name plus one descriptor per message; names are short config keys.
_MAX_MESSAGE = 1024
# How soon a connection no worker had room for is offered again: a worker's loop that is busy
# for a moment (a policy over a large read) drains its channel within a few milliseconds.
_RETRY_SECS = 0.01


def channel_pair() -> tuple[socket.socket, socket.socket]:
    """(supervisor end, worker end) of a new channel; the supervisor's end never blocks."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    return ours, theirs


def hand(
    channels: Sequence[socket.socket], start: int, name: str, conn: socket.socket
) -> tuple[int, bool]:
    """Pass ``conn`` to the first of ``channels``, from ``start`` on, that takes it.

    Returns ``(index, False)`` once a channel took it; the caller's copy of ``conn`` is then
    closed. Otherwise ``(-1, busy)``: ``busy`` when a channel refused only because its queue
    is full (its worker has not read it lately), and ``conn`` stays open for the caller to
    offer again; else every channel refused for good (their workers died) and ``conn`` is
    closed.
    """
    message = name.encode()
    busy = False
    for step in range(len(channels)):
        index = (start + step) % len(channels)
        try:
            socket.send_fds(channels[index], [message], [conn.fileno()])
        except (BlockingIOError, InterruptedError):
            busy = True
            continue
        except OSError:
            # A worker that died (EPIPE, ECONNRESET): the next one gets the connection.
            continue
        conn.close()
        return index, False
    if not busy:
        conn.close()
    return -1, busy


class Listener:
    """The supervisor's listening socket for one TCP-based source.

    Arguments:
        name: the source's name, sent with every connection so the worker knows its source.
        address: ``host:port``; port 0 picks a free one (see :attr:`address`).
        channels: called per connection for the channels of the workers ready now.

    A connection no worker has room for (every ready worker's channel is full: a burst of
    hundreds of connections while the workers are busy) waits here and is offered again
    shortly, accepting paused meanwhile: the connections behind it wait in the kernel's
    backlog, as they would for a busy single process, instead of being closed.
    """

    def __init__(
        self, name: str, address: str, channels: Callable[[], Sequence[socket.socket]]
    ) -> None:
        self.name = name
        self._channels = channels
        self._next = 0
        host, port = parse_address(address)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._sock.bind((host, port))
            self._sock.listen(1024)
        except OSError:
            self._sock.close()
            raise
        self._sock.setblocking(False)
        self._reading = False
        # The connection waiting for room, and the timer that offers it again.
        self._pending: socket.socket | None = None
        self._retry: asyncio.TimerHandle | None = None

    @property
    def address(self) -> str:
        """``host:port`` actually bound."""
        host, port = self._sock.getsockname()[:2]
        return format_address(host, port)

    def start(self) -> None:
        """Accept from now on (until :meth:`pause` or :meth:`close`); a connection that was
        waiting for room is offered again first."""
        if self._reading or self._retry is not None or self._sock.fileno() < 0:
            return
        loop = asyncio.get_running_loop()
        loop.add_reader(self._sock, self._accept)
        self._reading = True
        if self._pending is not None:
            loop.call_soon(self._accept)

    def pause(self) -> None:
        """Leave new connections in the kernel's backlog (no worker can take them now)."""
        if self._reading:
            asyncio.get_running_loop().remove_reader(self._sock)
            self._reading = False

    def close(self) -> None:
        self.pause()
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self._pending is not None:
            self._pending.close()
            self._pending = None
        self._sock.close()

    def _accept(self) -> None:
        if not self._reading:
            return
        channels = self._channels()
        if not channels:
            self.pause()
            return
        if self._pending is not None:
            conn, self._pending = self._pending, None
            if not self._pass(conn, channels):
                return
        # A bounded burst per wake-up, so one busy port cannot starve the supervisor's loop.
        for _ in range(64):
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # ECONNABORTED and the like: that client gave up; EMFILE: try again later.
                log.warning("cannot accept a connection", component=self.name, error=str(exc))
                return
            if not self._pass(conn, channels):
                return

    def _pass(self, conn: socket.socket, channels: Sequence[socket.socket]) -> bool:
        """Hand ``conn`` on; False when accepting should stop for now."""
        index, busy = hand(channels, self._next, self.name, conn)
        if index >= 0:
            self._next = index + 1
            return True
        if not busy:
            log.error("no worker took a connection; closed it", component=self.name)
            return False
        self._pending = conn
        self.pause()
        self._retry = asyncio.get_running_loop().call_later(_RETRY_SECS, self._again)
        return False

    def _again(self) -> None:
        """Accept again, the waiting connection first."""
        self._retry = None
        self.start()


class Receiver:
    """A worker's end of the channel: each connection handed over goes to ``adopt``.

    Arguments:
        sock: the worker's end (inherited from the supervisor).
        adopt: called with the source's name and the connection's socket; it owns the socket.
    """

    def __init__(self, sock: socket.socket, adopt: Callable[[str, socket.socket], None]) -> None:
        self._sock = sock
        self._sock.setblocking(False)
        self._adopt = adopt
        self._reading = False

    def start(self) -> None:
        if not self._reading:
            asyncio.get_running_loop().add_reader(self._sock, self._receive)
            self._reading = True

    def stop(self) -> None:
        """Take no more connections; the supervisor then hands them to the other workers."""
        if self._reading:
            asyncio.get_running_loop().remove_reader(self._sock)
            self._reading = False
        self._sock.close()

    def _receive(self) -> None:
        while True:
            try:
                message, fds, _, _ = socket.recv_fds(self._sock, _MAX_MESSAGE, 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.error("connection channel failed", error=str(exc))
                self.stop()
                return
            if not message and not fds:
                # The supervisor is gone; the worker is being stopped with it.
                self.stop()
                return
            name = message.decode(errors="replace")
            for fd in fds:
                self._adopt(name, socket.socket(fileno=fd))


def serve(
    tasks: set[asyncio.Task[None]],
    protocol: Callable[[], asyncio.BaseProtocol],
    sock: socket.socket,
    *,
    ssl_context: ssl.SSLContext | None,
    handshake_timeout: float,
) -> None:
    """Serve a handed connection with ``protocol``, as a listener would serve one it accepted.
    With TLS the handshake comes first, for at most ``handshake_timeout`` seconds; until it is
    done the connection is a task in ``tasks``, which the source cancels when it stops."""

    async def run() -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.connect_accepted_socket(
                protocol,
                sock,
                ssl=ssl_context,
                ssl_handshake_timeout=handshake_timeout if ssl_context else None,
            )
        except OSError:
            # The client left or failed its TLS handshake: a listener drops these quietly too.
            sock.close()
        except asyncio.CancelledError:
            sock.close()
            raise

    task = asyncio.ensure_future(run())
    tasks.add(task)
    task.add_done_callback(tasks.discard)
