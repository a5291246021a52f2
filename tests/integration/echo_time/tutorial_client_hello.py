# The tutorial's first TCP client (第一版), unchanged but for the port, taken from argv[1].
import socket
import sys

phone = socket.socket(socket.AF_INET,socket.SOCK_STREAM)  # 买电话
phone.connect(('127.0.0.1',int(sys.argv[1])))  # 与客户端建立连接, 拨号
phone.send('hello'.encode('utf-8'))
from_server_data = phone.recv(1024)
print(from_server_data)
phone.close()  # 挂电话
