# The tutorial's time client (自制时间服务器), unchanged but for the port, taken from argv[1].
# Its loop has no exit: it ends when input() meets the end of stdin (EOFError).
from socket import *
import sys

ip_port=('127.0.0.1',int(sys.argv[1]))
bufsize=1024
tcp_client=socket(AF_INET,SOCK_DGRAM)

while True:
    msg=input('请输入时间格式(例%Y %m %d)>>: ').strip()
    tcp_client.sendto(msg.encode('utf-8'),ip_port)
    data=tcp_client.recv(bufsize)

    print('当前日期:',str(data,encoding='utf-8'))
