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


def channel_pair() -> tuple[socket.socket, socket.socket]:
    """(supervisor end, worker end) of a new channel; the supervisor's end never blocks."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    return ours, theirs


def hand(channels: Sequence[socket.socket], start: int, name: str, conn: socket.socket) -> int:
    """Pass ``conn`` to the first of ``channels``, from ``start`` on, that takes it; the index
    of that channel, or -1 if none did. The caller's copy of ``conn`` is closed either way."""
    message = name.encode()
    try:
        for step in range(len(channels)):
            index = (start + step) % len(channels)
            try:
                socket.send_fds(channels[index], [message], [conn.fileno()])
            except OSError:
                # A worker that died (EPIPE, ECONNRESET) or is too far behind (EAGAIN):
                # the next one gets the connection.
                continue
            return index
        return -1
    finally:
        conn.close()


class Listener:
    """The supervisor's listening socket for one TCP-based source.

    Arguments:
        name: the source's name, sent with every connection so the worker knows its source.
        address: ``host:port``; port 0 picks a free one (see :attr:`address`).
        channels: called per connection for the channels of the workers ready now.
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

    @property
    def address(self) -> str:
        """``host:port`` actually bound."""
        host, port = self._sock.getsockname()[:2]
        return format_address(host, port)

    def start(self) -> None:
        """Accept from now on (until :meth:`pause` or :meth:`close`)."""
        if not self._reading and self._sock.fileno() >= 0:
            asyncio.get_running_loop().add_reader(self._sock, self._accept)
            self._reading = True

    def pause(self) -> None:
        """Leave new connections in the kernel's backlog (no worker can take them now)."""
        if self._reading:
            asyncio.get_running_loop().remove_reader(self._sock)
            self._reading = False

    def close(self) -> None:
        self.pause()
        self._sock.close()

    def _accept(self) -> None:
        channels = self._channels()
        if not channels:
            self.pause()
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
            index = hand(channels, self._next, self.name, conn)
            if index < 0:
                log.error("no worker took a connection; closed it", component=self.name)
                return
            self._next = index + 1


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
