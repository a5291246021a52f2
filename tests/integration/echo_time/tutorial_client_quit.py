# The tutorial's third TCP client (第三版, 通信,连接循环), unchanged but for the port, taken from argv[1].
import socket
import sys

phone = socket.socket(socket.AF_INET,socket.SOCK_STREAM)
phone.connect(('127.0.0.1',int(sys.argv[1])))
while 1:
    client_data = input('>>> ')
    if len(client_data.strip()) == 0: continue
    phone.send(client_data.encode('utf-8'))
    if client_data == 'q': break
    from_server_data = phone.recv(1024)
    print(from_server_data.decode('utf-8'))
phone.close()
