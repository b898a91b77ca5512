"""A loopback TCP proxy in front of a real server: adds latency, takes the path down, or
stalls it (connections stay open and nothing ever answers, a fault a real server cannot be
made to show).

Used to make a real KMS or Vault endpoint slow (bench/kek.py) or unreachable for a while
(fault tests) without touching the server's state; moto and a dev-mode OpenBao lose every key
when they restart, so stopping them is not an option.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class TcpProxy:
    def __init__(self, upstream_port: int, *, delay: float = 0.0) -> None:
        self.upstream_port = upstream_port
        self.delay = delay
        self.up = True
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self._conns: list[socket.socket] = []
        self._silent: set[socket.socket] = set()
        self.stalled = False
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def down(self) -> None:
        """Refuse new connections and cut the open ones (an unreachable endpoint)."""
        self.up = False
        with self._lock:
            for sock in self._conns:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                    sock.close()
            self._conns.clear()

    def stall(self) -> None:
        """Swallow everything: open connections go silent for good, new ones get no upstream."""
        self.stalled = True
        with self._lock:
            self._silent.update(self._conns)

    def restore(self) -> None:
        """New connections work again (connections silenced by :meth:`stall` stay silent)."""
        self.up = True
        self.stalled = False

    def _accept(self) -> None:
        while True:
            client, _ = self._server.accept()
            if not self.up:
                client.close()
                continue
            if self.stalled:
                with self._lock:
                    self._silent.add(client)
                threading.Thread(
                    target=self._pump, args=(client, client, False), daemon=True
                ).start()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                client.close()
                continue
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._conns.extend((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, delayed: bool) -> None:
        last = 0.0
        try:
            while chunk := src.recv(65536):
                if delayed and self.delay and time.monotonic() - last > 0.002:
                    time.sleep(self.delay)  # once per request, not per chunk of one
                last = time.monotonic()
                if src in self._silent or dst in self._silent:
                    continue  # read and dropped: the sender waits for an answer forever
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
