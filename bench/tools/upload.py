#!/usr/bin/python3
"""Client for the body scenario: POSTs SIZE bytes (with Content-Length) to HOST:PORT over
HTTP/1.1, streamed from one 1 MiB buffer, reads the response and prints one JSON line:
{"status": ..., "seconds": ..., "echoed": bytes the sink says it received}.
Usage: upload.py HOST PORT SIZE"""
import json
import socket
import sys
import time

host, port, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
chunk = memoryview(b"\x00" * (1 << 20))
sock = socket.create_connection((host, port))
start = time.monotonic()
sock.sendall(b"POST /upload HTTP/1.1\r\nHost: bench\r\nContent-Type: application/octet-stream\r\n"
             b"Content-Length: %d\r\n\r\n" % size)
left = size
while left > 0:
    n = min(left, len(chunk))
    sock.sendall(chunk[:n])
    left -= n
resp = b""
while b"\r\n\r\n" not in resp:
    data = sock.recv(65536)
    if not data:
        break
    resp += data
head, _, body = resp.partition(b"\r\n\r\n")
status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
length = 0
for line in head.split(b"\r\n")[1:]:
    if line.lower().startswith(b"content-length:"):
        length = int(line.split(b":", 1)[1])
while len(body) < length:
    data = sock.recv(65536)
    if not data:
        break
    body += data
elapsed = time.monotonic() - start
sock.close()
try:
    echoed = int(body.strip() or b"0")
except ValueError:
    echoed = 0
print(json.dumps({"status": status, "seconds": elapsed, "echoed": echoed}))
