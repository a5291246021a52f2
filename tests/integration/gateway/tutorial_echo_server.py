# The tutorial's TCP echo server, third version (第三版, 通信,连接循环), unchanged but for the
# port: taken from argv[1] (0: any free one), and the port it got printed first, for the test.
import socket
import sys

phone = socket.socket(socket.AF_INET,socket.SOCK_STREAM)
phone.bind(('127.0.0.1',int(sys.argv[1])))
phone.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
phone.listen(5)
print(phone.getsockname()[1], flush=True)
while 1:
    conn,client_addr = phone.accept()
    print(conn,client_addr,sep='\n')
    while 1:
        if conn:
            from_client_data = conn.recv(1024)
            if len(from_client_data) == 0 or from_client_data.decode('utf-8') == 'q':  # 如果客户端返回为空或者q,说明已经断开
                break
            print(from_client_data.decode('utf-8'))
            conn.send(from_client_data.upper())
        else:
            break
