# The tutorial's sticky-packet client (粘包, 情况 2): two quick sends, then close; port from argv[1].
import socket
import sys

phone = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
phone.connect(('127.0.0.1', int(sys.argv[1])))
phone.send(b'hello')
phone.send(b'world')
phone.close()
