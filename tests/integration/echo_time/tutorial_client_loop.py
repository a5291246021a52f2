# The tutorial's second TCP client (第二版, 通信循环), unchanged but for the port, taken from argv[1].
# Its loop has no exit: it ends when input() meets the end of stdin (EOFError).
import socket
import sys

phone = socket.socket(socket.AF_INET,socket.SOCK_STREAM)
phone.connect(('127.0.0.1',int(sys.argv[1])))
while 1:
    client_data = input('>>> ')
    phone.send(client_data.encode('utf-8'))
    from_server_data = phone.recv(1024)
    print(from_server_data.decode('utf-8'))
phone.close()
