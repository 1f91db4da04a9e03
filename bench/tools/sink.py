#!/usr/bin/python3
"""Upstream sink for the 1 GiB body scenario: reads each request body (Content-Length
or chunked) to its end, discards it, then answers 200 with the number of bytes read.
HTTP/1.1 keep-alive, one thread per connection. Usage: sink.py PORT"""
import socket
import socketserver
import sys

BUF = 1 << 20


class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        sock = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = bytearray(BUF)
        view = memoryview(buf)
        pending = b""
        while True:
            while b"\r\n\r\n" not in pending:
                chunk = sock.recv(65536)
                if not chunk:
                    return
                pending += chunk
            head, _, pending = pending.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            fields = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                fields[name.strip().lower()] = value.strip()
            total = 0
            if "content-length" in fields:
                left = int(fields["content-length"])
                take = min(left, len(pending))
                total += take
                left -= take
                pending = pending[take:]
                while left > 0:
                    n = sock.recv_into(view, min(left, BUF))
                    if n == 0:
                        return
                    total += n
                    left -= n
            elif "chunked" in fields.get("transfer-encoding", "").lower():
                while True:
                    while b"\r\n" not in pending:
                        chunk = sock.recv(65536)
                        if not chunk:
                            return
                        pending += chunk
                    size_line, _, pending = pending.partition(b"\r\n")
                    size = int(size_line.split(b";")[0], 16)
                    if size == 0:  # last chunk: skip any trailers up to the empty line
                        while not (pending.startswith(b"\r\n") or b"\r\n\r\n" in pending):
                            chunk = sock.recv(65536)
                            if not chunk:
                                return
                            pending += chunk
                        if pending.startswith(b"\r\n"):
                            pending = pending[2:]
                        else:
                            pending = pending.partition(b"\r\n\r\n")[2]
                        break
                    left = size + 2  # data and its CRLF
                    take = min(left, len(pending))
                    pending = pending[take:]
                    left -= take
                    while left > 0:
                        n = sock.recv_into(view, min(left, BUF))
                        if n == 0:
                            return
                        left -= n
                    total += size
            body = b"%d\n" % total
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
                         % (len(body), body))


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


if __name__ == "__main__":
    with Server(("127.0.0.1", int(sys.argv[1])), Handler) as srv:
        srv.serve_forever()
