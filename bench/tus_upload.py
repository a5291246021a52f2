#!/usr/bin/env python3
"""tus_upload.py - one file to the gateway as tus 1.0 PATCHes of a fixed size, or as one PUT.

The same client for both, so the bench row compares the protocols and not two clients: the body
goes out with sendfile() from the file (zero-copy, as curl -T would read it), over one kept-alive
connection. Prints "BYTES SECONDS" (the upload's wall time, creation included) on success; exits
1 with the reason on stderr otherwise. Used by bench/lib/transfers.py (figure upload_tus).
"""

import argparse
import base64
import http.client
import os
import socket
import sys
import time


def parse_size(text):
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    if text and text[-1].upper() in units:
        return int(text[:-1]) * units[text[-1].upper()]
    return int(text)


class Conn:
    """One HTTP/1.1 connection that sends a request head, then a file range with sendfile()."""

    def __init__(self, host, port):
        self.sock = socket.create_connection((host, port), timeout=600)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.host = "%s:%d" % (host, port)

    def request(self, method, path, headers, f=None, offset=0, count=0):
        head = ["%s %s HTTP/1.1" % (method, path), "Host: " + self.host, "Content-Length: %d" % count]
        head += ["%s: %s" % kv for kv in headers.items()]
        self.sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("ascii"))
        if count:
            sent = self.sock.sendfile(f, offset, count)
            if sent != count:
                raise OSError("sent %d of %d body bytes" % (sent, count))
        resp = http.client.HTTPResponse(self.sock, method=method)
        resp.begin()
        body = resp.read()
        return resp.status, resp.headers, body


def upload_put(conn, path, f, size):
    status, _, body = conn.request("PUT", "/api/v1/files/" + path, {"Content-Type": "application/octet-stream"},
                                   f, 0, size)
    if status not in (200, 201):
        raise RuntimeError("PUT answered %d: %s" % (status, body[:300]))


def upload_tus(conn, name, f, size, chunk):
    tus = {"Tus-Resumable": "1.0.0"}
    meta = "filename " + base64.b64encode(name.encode()).decode()
    status, headers, body = conn.request("POST", "/api/v1/uploads/",
                                         dict(tus, **{"Upload-Length": str(size), "Upload-Metadata": meta}))
    if status != 201:
        raise RuntimeError("POST answered %d: %s" % (status, body[:300]))
    location = headers["Location"]
    offset = 0
    while offset < size:
        n = min(chunk, size - offset)
        status, headers, body = conn.request("PATCH", location, dict(tus, **{
            "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"}), f, offset, n)
        if status != 204 or int(headers["Upload-Offset"]) != offset + n:
            raise RuntimeError("PATCH at %d answered %d: %s" % (offset, status, body[:300]))
        offset += n


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].split(" - ", 1)[1])
    p.add_argument("mode", choices=["tus", "put"])
    p.add_argument("addr", help="the gateway's HOST:PORT")
    p.add_argument("file")
    p.add_argument("name", help="the stored file's name")
    p.add_argument("--chunk", default="8M", help="bytes per PATCH (default 8M)")
    args = p.parse_args()
    host, port = args.addr.rsplit(":", 1)
    size = os.stat(args.file).st_size
    with open(args.file, "rb") as f:
        conn = Conn(host, int(port))
        t0 = time.monotonic()
        if args.mode == "put":
            upload_put(conn, args.name, f, size)
        else:
            upload_tus(conn, args.name, f, size, parse_size(args.chunk))
        elapsed = time.monotonic() - t0
    print("%d %.6f" % (size, elapsed))


if __name__ == "__main__":
    try:
        main()
    except (OSError, RuntimeError, KeyError, ValueError) as e:
        print("tus_upload.py: %s" % e, file=sys.stderr)
        sys.exit(1)
