"""The mirrors of the verification load tests (loadtest/verify.sh), run on
127.0.0.1 in a thread of the driver with their own asyncio loop:

- DelayProxy: an HTTP/1.1 proxy in front of the real registry that holds
  every request DELAY seconds before forwarding it and counts the requests
  by method and path. The count is what the churn run's "registry requests
  ≤ distinct images + token fetches" target is checked against; the delay
  stands in for a mirror across a WAN (20 ms in issue 11).
- DeadMirror: a listener that accepts connections, reads whatever comes and
  never answers: the worst mirror there is, which only a timeout detects.

HTTP-aware rather than a TCP relay because a keep-alive connection carries
many requests and only the request heads say how many. The proxy handles what
the verifier and the registry send each other: request bodies by
Content-Length, response bodies by Content-Length or chunked, none for HEAD,
1xx, 204 and 304. Standard library only.
"""

import asyncio
import collections
import threading
import time

# The largest request or response head read (the registry's are < 2 KiB).
HEAD_LIMIT = 64 * 1024


class _LoopThread:
    """An asyncio loop in a daemon thread, serving one listener on 127.0.0.1."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server = None
        self.port = None

    def start(self):
        """Listen on a free port; returns the port."""
        self.thread.start()
        future = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self.handle, "127.0.0.1", 0, limit=HEAD_LIMIT), self.loop)
        self.server = future.result(10)
        self.port = self.server.sockets[0].getsockname()[1]
        return self.port

    @property
    def host(self):
        """host:port as an image reference names it."""
        return f"127.0.0.1:{self.port}"

    def stop(self):
        """Close the listener and every connection, then stop the loop."""
        asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    async def _shutdown(self):
        self.server.close()
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def handle(self, reader, writer):
        raise NotImplementedError


def _headers(head):
    """The start line and the lower-cased headers of a message head."""
    lines = head.decode("latin-1").split("\r\n")
    fields = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            fields[name.strip().lower()] = value.strip()
    return lines[0], fields


async def _read_chunked(reader):
    """A chunked body, as it came (chunks, trailers and the final CRLF)."""
    out = bytearray()
    while True:
        size_line = await reader.readuntil(b"\r\n")
        out += size_line
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            while True:
                trailer = await reader.readuntil(b"\r\n")
                out += trailer
                if trailer == b"\r\n":
                    return bytes(out)
        out += await reader.readexactly(size + 2)


class DelayProxy(_LoopThread):
    """Forwards each request to UPSTREAM (host, port) after DELAY seconds, counting it."""

    def __init__(self, upstream, delay):
        super().__init__()
        self.upstream, self.delay = upstream, delay
        self.lock = threading.Lock()
        # (method, path) -> how many times it was asked.
        self.requests = collections.Counter()
        self.connections = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.errors = 0
        # How long the registry itself took per request (after the delay), s.
        self.upstream_seconds = []

    def counts(self):
        """A copy of the request counter."""
        with self.lock:
            return collections.Counter(self.requests)

    async def handle(self, reader, writer):
        with self.lock:
            self.connections += 1
        upstream_writer = None
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.upstream, limit=HEAD_LIMIT)
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return  # the client closed its keep-alive connection
                start, fields = _headers(head)
                method, path = start.split(" ")[:2]
                body = await reader.readexactly(int(fields.get("content-length", "0")))
                with self.lock:
                    self.requests[(method, path)] += 1
                    self.in_flight += 1
                    self.max_in_flight = max(self.max_in_flight, self.in_flight)
                try:
                    await asyncio.sleep(self.delay)
                    sent = time.monotonic()
                    upstream_writer.write(head + body)
                    await upstream_writer.drain()
                    response, close = await self.relay_response(upstream_reader, method)
                    with self.lock:
                        self.upstream_seconds.append(time.monotonic() - sent)
                finally:
                    with self.lock:
                        self.in_flight -= 1
                writer.write(response)
                await writer.drain()
                if close or fields.get("connection", "").lower() == "close":
                    return
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            with self.lock:
                self.errors += 1
        except asyncio.CancelledError:
            pass  # stop(): the run is over
        finally:
            for w in (writer, upstream_writer):
                if w is not None:
                    w.close()

    async def relay_response(self, upstream, method):
        """The upstream's whole answer to one request, and whether the connection ends after it."""
        head = await upstream.readuntil(b"\r\n\r\n")
        start, fields = _headers(head)
        status = int(start.split(" ")[1])
        close = fields.get("connection", "").lower() == "close"
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            body = b""
        elif "chunked" in fields.get("transfer-encoding", "").lower():
            body = await _read_chunked(upstream)
        elif "content-length" in fields:
            body = await upstream.readexactly(int(fields["content-length"]))
        else:
            body, close = await upstream.read(), True
        return head + body, close


class DeadMirror(_LoopThread):
    """Accepts, reads and never answers; counts connections and request bytes."""

    def __init__(self):
        super().__init__()
        self.lock = threading.Lock()
        self.connections = 0
        self.bytes_in = 0
        # When each connection came (time.monotonic()), to show when the
        # breaker stopped them.
        self.accepted_at = []

    async def handle(self, reader, writer):
        with self.lock:
            self.connections += 1
            self.accepted_at.append(time.monotonic())
        try:
            while chunk := await reader.read(65536):
                with self.lock:
                    self.bytes_in += len(chunk)
        except (OSError, asyncio.CancelledError):
            pass  # the client gave up, or stop()
        finally:
            writer.close()
