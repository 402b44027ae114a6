"""A TCP proxy on loopback that makes a network bad on purpose (asyncio, in a thread of its own).

Between clients and a Kafka listener it can add latency each way, cut every
open connection, or black-hole traffic (connections stay open, nothing gets
through, as with a dropped route) until healed.  The bad-network scenario
builds on it: the node must advertise the proxy's port for every client
connection to go through it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any


class NetProxy:
    """Forwards ``127.0.0.1:port`` to ``127.0.0.1:target_port``.

    Parameters:
      target_port: Where connections go.
      port: The proxy's port (0: a free one; read ``port`` after ``start``).

    ``latency`` (seconds, each way) and ``black_hole`` may change at any time;
    ``cut()`` closes every connection open now.
    """

    def __init__(self, target_port: int, port: int = 0) -> None:
        self.target_port = target_port
        self.port = port
        self.latency = 0.0
        self.black_hole = False
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="netproxy", daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def start(self) -> NetProxy:
        self._thread.start()
        self._server = self._run(asyncio.start_server(self._accept, "127.0.0.1", self.port))
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def cut(self) -> int:
        """Close every open connection (both sides); returns how many pairs were cut."""

        async def close_all() -> int:
            writers = list(self._writers)
            for writer in writers:
                writer.close()
            return len(writers) // 2

        return self._run(close_all())

    def stop(self) -> None:
        server = self._server
        if server is not None:

            async def close() -> None:
                server.close()  # on the loop's thread: asyncio's server is not thread-safe

            self._run(close())
            self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_writer.close()
            return
        self.connections += 1
        self._writers |= {client_writer, server_writer}
        await asyncio.gather(
            self._pipe(client_reader, server_writer, client_writer),
            self._pipe(server_reader, client_writer, server_writer),
        )
        self._writers -= {client_writer, server_writer}

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, other: asyncio.StreamWriter
    ) -> None:
        try:
            while chunk := await reader.read(65536):
                while self.black_hole and not writer.is_closing():
                    await asyncio.sleep(0.05)  # held, as by a dropped route: nothing gets through
                if self.latency:
                    await asyncio.sleep(self.latency)
                writer.write(chunk)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            # One side gone: the other goes too, as a cut connection would.
            writer.close()
            other.close()
