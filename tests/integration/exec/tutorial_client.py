#!/usr/bin/env python3
"""The tutorial's improved remote command client (方案二), ported faithfully but done right.

usage: tutorial_client.py PORT [COMMAND...]

Each command (from the arguments, else one per line of stdin) goes out raw, as the
tutorial's client sends it; the reply is read as the tutorial reads it: a 4-byte
header size, the JSON header, then total_size bytes of body (stdout then stderr),
which is printed. Unlike the original, reads loop until they have every byte asked
for, so a large reply or a split packet cannot confuse it.
"""
import json
import socket
import struct
import sys


def recv_exactly(sock, n):
    chunks, have = [], 0
    while have < n:
        data = sock.recv(min(65536, n - have))
        if not data:
            raise ConnectionError("the server closed the connection")
        chunks.append(data)
        have += len(data)
    return b"".join(chunks)


def main():
    if len(sys.argv) < 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    port = int(sys.argv[1])
    commands = sys.argv[2:] or sys.stdin
    phone = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    phone.connect(("127.0.0.1", port))
    for cmd in commands:
        cmd = cmd.strip()
        if not cmd:
            continue
        phone.send(cmd.encode("utf-8"))
        # 1, the fixed 4-byte header size: the tutorial's struct 'i' on a little-endian machine
        header_size = struct.unpack("<i", recv_exactly(phone, 4))[0]
        # 2, the header itself, then what it says about the body
        header_dict = json.loads(recv_exactly(phone, header_size).decode("utf-8"))
        total_size = header_dict["total_size"]
        # 3, exactly total_size bytes of real data
        res = recv_exactly(phone, total_size)
        print(res.decode("utf-8", "replace"))
    phone.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
