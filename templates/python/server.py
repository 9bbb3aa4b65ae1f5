"""Slipway's HTTP server around handler.py's `handler(data)`; templates/README.md has the contract.

Standard library only: the image is Debian's python3 on a minbase, built offline.
"""

import importlib.util
import json
import os
import signal
import socket
import socketserver
import sys
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl

MAX_BODY = 6 * 1024 * 1024
# Past this, the rest of a refused body is not worth reading: the connection is cut instead.
DRAIN_LIMIT = 16 * 1024 * 1024
# Longer than the API's invocation pool keeps a connection idle (30 s): the server closing an
# idle connection first would race the API reusing it.
IDLE_TIMEOUT = 65


def load_handler():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "handler.py")
    spec = importlib.util.spec_from_file_location("handler", path)
    module = importlib.util.module_from_spec(spec)
    # Registered before it runs, as `import handler` would: pickle, dataclasses and friends
    # look their module up by name.
    sys.modules["handler"] = module
    spec.loader.exec_module(module)
    handler = getattr(module, "handler", None)
    if not callable(handler):
        sys.exit("handler.py must define `def handler(data): ...`")
    return handler


HANDLER = None


def reject_constant(name):
    # Python's json accepts NaN and Infinity, which are not JSON (and Node's server rejects).
    raise ValueError(f"{name} is not JSON")


class BodyError(Exception):
    """A body refused. `rest` reads and drops what is left of it, so that the connection can
    carry the next request; None when it cannot (the connection is then closed)."""

    def __init__(self, status, code, message, rest=None):
        super().__init__(message)
        self.status, self.code, self.message, self.rest = status, code, message, rest


def too_large(rest=None):
    return BodyError(413, "body_too_large", f"the body exceeds {MAX_BODY} bytes", rest)


async def _awaited(awaitable):
    return await awaitable


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = IDLE_TIMEOUT

    # --- connection bookkeeping for a graceful stop ----------------------------------------

    def handle_one_request(self):
        # Between requests a connection is "waiting": the stop closes those at once, while one
        # inside a request is answered (with Connection: close) first.
        if not self.server.begin_wait(self):
            self.close_connection = True
            return
        try:
            super().handle_one_request()
        finally:
            self.server.end_wait(self)

    def parse_request(self):
        # Called as soon as a request line arrived: from here on it is in flight.
        self.server.end_wait(self)
        return super().parse_request()

    # --- methods -----------------------------------------------------------------------------

    # Every method's body is read (and a GET's or a refused method's dropped): bounded, and never
    # left on the connection to be taken for the next request.

    def do_GET(self):
        try:
            self.read_body()
        except BodyError as e:
            return self.refuse(e)
        query = self.path.partition("?")[2]
        # dict() keeps the last of repeated keys, as Object.fromEntries does in Node's server.
        self.invoke(dict(parse_qsl(query, keep_blank_values=True)))

    def do_POST(self):
        try:
            raw = self.read_body()
        except BodyError as e:
            return self.refuse(e)
        data = None
        if raw.strip():
            try:
                body = json.loads(raw.decode("utf-8-sig"), parse_constant=reject_constant)
            except (ValueError, RecursionError) as e:
                return self.fail(400, "invalid_json", f"the body is not JSON: {e}")
            # Liberal: anything but an object with "data" is the data itself.
            data = body["data"] if isinstance(body, dict) and "data" in body else body
        self.invoke(data)

    def method_not_allowed(self):
        try:
            self.read_body()
        except BodyError as e:
            return self.refuse(e)
        self.fail(405, "method_not_allowed", f"{self.command} is not allowed",
                  headers=[("Allow", "GET, POST")])

    def __getattr__(self, name):
        # The stdlib answers a method without a do_<METHOD> with 501; the contract says 405.
        if name.startswith("do_"):
            return self.method_not_allowed
        raise AttributeError(name)

    # --- the handler ---------------------------------------------------------------------------

    def invoke(self, data):
        try:
            result = HANDLER(data)
            # Not part of the contract (a plain function), but an `async def` costs nothing to
            # honour; asyncio is imported only then.
            if hasattr(type(result), "__await__"):
                import asyncio

                result = asyncio.run(_awaited(result))
        except Exception as e:
            traceback.print_exc()
            return self.fail(500, "handler_error", str(e) or type(e).__name__)
        try:
            payload = json.dumps(result, allow_nan=False, ensure_ascii=False,
                                 separators=(",", ":")).encode("utf-8")
        except (TypeError, ValueError, RecursionError) as e:
            print(f"the handler's return value cannot be encoded as JSON: {e}", file=sys.stderr)
            return self.fail(500, "invalid_result",
                             f"the handler's return value cannot be encoded as JSON: {e}")
        self.reply(200, payload)

    # --- bodies --------------------------------------------------------------------------------

    def declared_length(self):
        value = self.headers.get("Content-Length")
        if value is None:
            return None
        try:
            length = int(value)
        except ValueError:
            length = -1
        if length < 0:
            raise BodyError(400, "bad_request", f"invalid Content-Length: {value!r}")
        return length

    def read_body(self):
        encoding = self.headers.get("Transfer-Encoding")
        if encoding is not None:
            if encoding.strip().lower() != "chunked":
                raise BodyError(400, "bad_request", f"unsupported Transfer-Encoding: {encoding!r}")
            return self.read_chunked()
        length = self.declared_length()
        if not length:
            return b""
        if length > MAX_BODY:
            raise too_large(None if length > DRAIN_LIMIT else lambda: self.skip(length))
        return self.read_exact(length)

    def read_exact(self, length):
        data = self.rfile.read(length)
        if len(data) < length:
            raise BodyError(400, "bad_request", "the body ended early")
        return data

    def skip(self, length):
        while length > 0:
            length -= len(self.read_exact(min(length, 65536)))

    def chunk_lengths(self):
        # http.server has no chunked decoding; proxies and streaming clients send it. Yields
        # each chunk's length; the caller consumes the chunk and calls end_chunk().
        while True:
            line = self.rfile.readline(65537)
            try:
                length = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise BodyError(400, "bad_request", "malformed chunked body") from None
            if length < 0:
                raise BodyError(400, "bad_request", "malformed chunked body")
            if length == 0:
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass  # trailers: nothing here uses them
                return
            yield length

    def end_chunk(self):
        if self.rfile.readline(3) not in (b"\r\n", b"\n"):
            raise BodyError(400, "bad_request", "malformed chunked body")

    def read_chunked(self):
        parts, size = [], 0
        for length in self.chunk_lengths():
            size += length
            if size > MAX_BODY:
                def rest(pending=length, total=size):
                    self.skip(pending)
                    self.end_chunk()
                    for more in self.chunk_lengths():
                        total += more
                        if total > DRAIN_LIMIT:
                            raise too_large()
                        self.skip(more)
                        self.end_chunk()
                raise too_large(None if size > DRAIN_LIMIT else rest)
            parts.append(self.read_exact(length))
            self.end_chunk()
        return b"".join(parts)

    def refuse(self, e):
        # Answered first; then the rest of the body is read and dropped, so a client that sends
        # it all before reading gets this answer, not a reset, and may keep the connection.
        self.fail(e.status, e.code, e.message, close=e.rest is None)
        if e.rest is not None and not self.close_connection:
            try:
                e.rest()
            except (BodyError, OSError):
                self.close_connection = True

    def handle_expect_100(self):
        # Refuse a body we would refuse anyway before the client sends it.
        try:
            length = self.declared_length()
        except BodyError as e:
            self.fail(e.status, e.code, e.message, close=True)
            return False
        if self.command == "POST" and length is not None and length > MAX_BODY:
            self.fail(413, "body_too_large", f"the body exceeds {MAX_BODY} bytes", close=True)
            return False
        return super().handle_expect_100()

    # --- responses ---------------------------------------------------------------------------

    def fail(self, status, code, message, headers=(), close=False):
        payload = json.dumps({"error": {"code": code, "message": message}},
                             ensure_ascii=False, separators=(",", ":"))
        # "replace": an exception's message may hold lone surrogates, which UTF-8 cannot carry.
        self.reply(status, payload.encode("utf-8", "replace"), headers, close)

    def reply(self, status, payload, headers=(), close=False):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in headers:
            self.send_header(name, value)
        if close or self.server.stopping:
            self.send_header("Connection", "close")  # also sets self.close_connection
        elif self.request_version == "HTTP/1.0" and not self.close_connection:
            self.send_header("Connection", "keep-alive")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def send_response(self, code, message=None):
        # As the stdlib's, minus the Server header (it only names the interpreter's version).
        self.log_request(code)
        self.send_response_only(code, message)
        self.send_header("Date", self.date_time_string())

    def send_error(self, code, message=None, explain=None):
        # The stdlib's protocol errors (bad request line, too many headers, ...) answer JSON too.
        short = self.responses.get(code, ("error",))[0]
        self.fail(code, short.lower().replace(" ", "_").replace("-", "_"), message or short,
                  close=True)

    def log_request(self, code="-", size="-"):
        pass  # no access log: stderr is the function's own log, and the platform logs requests

    def log_error(self, format, *args):
        # An idle keep-alive connection reaching its timeout is routine, not an error.
        if not format.startswith("Request timed out"):
            super().log_error(format, *args)


class Server(ThreadingHTTPServer):
    # server_close() joins the request threads, so in-flight requests finish before the exit;
    # it only tracks non-daemon ones (ThreadingHTTPServer's default is daemon).
    daemon_threads = False
    block_on_close = True
    # Node's default backlog; socketserver's 5 drops connections in a burst.
    request_queue_size = 511

    def __init__(self, address, handler_class):
        self.stopping = False
        self.lock = threading.Lock()
        self.waiting = set()
        super().__init__(address, handler_class)

    def server_bind(self):
        # HTTPServer.server_bind resolves the address with getfqdn(): a reverse DNS lookup that
        # stalls start-up where DNS is blocked, for a name nothing here uses.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request, client_address):
        # A client that went away mid-request is routine, not worth a traceback in the log.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)

    def begin_wait(self, handler):
        with self.lock:
            if self.stopping:
                return False
            self.waiting.add(handler)
            return True

    def end_wait(self, handler):
        with self.lock:
            self.waiting.discard(handler)

    def stop(self):
        with self.lock:
            if self.stopping:
                return
            self.stopping = True
            waiting = list(self.waiting)
        # SHUT_RD wakes the thread blocked reading the next request (it sees EOF and ends),
        # while one that just read a request can still write its answer.
        for handler in waiting:
            try:
                handler.connection.shutdown(socket.SHUT_RD)
            except OSError:
                pass
        self.shutdown()


def main():
    global HANDLER
    HANDLER = load_handler()
    port = int(os.environ.get("PORT") or 8080)
    server = Server(("0.0.0.0", port), Handler)

    def on_signal(signum, frame):
        # shutdown() waits for serve_forever() to return, which runs in this very thread.
        threading.Thread(target=server.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"listening on 0.0.0.0:{port}", file=sys.stderr)
    server.serve_forever()
    server.server_close()


if __name__ == "__main__":
    main()
