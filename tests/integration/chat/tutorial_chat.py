# The tutorial's "QQ" chat client, unchanged but for the port, taken from argv[1] (every contact
# is the one chat server). Like the tutorial's other clients it has no way out but the end of
# input (EOFError): its `if msg == 'q'` compares the message after the '发给NAME: ' prefix was
# added, so it never matches.
import socket
import sys

BUFSIZE=1024
udp_client_socket=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)

qq_name_dic={
    'taibai':('127.0.0.1',int(sys.argv[1])),
    'Jedan':('127.0.0.1',int(sys.argv[1])),
    'Jack':('127.0.0.1',int(sys.argv[1])),
    'John':('127.0.0.1',int(sys.argv[1])),
}


while True:
    while 1:
        qq_name=input('请选择聊天对象: ').strip()
        if qq_name not in qq_name_dic:
            print('没有这个聊天对象')
            continue
        break

    while True:
        msg='发给'+ qq_name + ': ' + input('请输入消息,回车发送,输入q结束和他的聊天: ').strip()
        if msg == 'q':break
        if not msg:continue
        udp_client_socket.sendto(msg.encode('utf-8'),qq_name_dic[qq_name])# 必须带着自己的地址,这就是UDP不一样的地方,不需要建立连接,但是要带着自己的地址给服务端,否则服务端无法判断是谁给我发的消息,并且不知道该把消息回复到什么地方,因为我们之间没有建立连接通道

        back_msg,addr=udp_client_socket.recvfrom(BUFSIZE)# 同样也是阻塞状态,等待接收消息
        print('来自[%s:%s]的一条消息:\033[1;34;43m%s\033[0m' %(addr[0],addr[1],back_msg.decode('utf-8')))

udp_client_socket.close()
