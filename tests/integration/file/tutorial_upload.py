# The tutorial's FTP upload client ("FTP上传下载文件的代码(简单版)", 客户端), kept as written
# except that the port and the file come from argv: tutorial_upload.py PORT FILE.
# It sends a 4-byte header length (struct.pack('i'), little-endian on x86),
# the JSON header {"filepath", "filename", "filesize"}, the file in 1024-byte
# pieces, then closes without reading any reply.
import os
import json
import socket
import struct
import sys

port = int(sys.argv[1])
source = sys.argv[2]

sk = socket.socket()
sk.connect(('127.0.0.1', port))

buffer = 1024  # 读取文件的时候,每次读取的大小
head = {
    'filepath': os.path.dirname(source),  # 需要下载的文件路径,也就是文件所在的文件夹
    'filename': os.path.basename(source),  # 改成上面filepath下的一个文件
    'filesize': None,
}

file_path = os.path.join(head['filepath'], head['filename'])
filesize = os.path.getsize(file_path)
head['filesize'] = filesize
json_head = json.dumps(head)  # 字典转换成字符串
bytes_head = json_head.encode('utf-8')  # 字符串转换成bytes类型
print(json_head)
print(bytes_head)
head_len = len(bytes_head)  # 报头长度
pack_len = struct.pack('i', head_len)
print(head_len)
print(pack_len)
sk.send(pack_len)  # 先发送报头长度
sk.send(bytes_head)  # 再发送bytes类型的报头

with open(file_path, 'rb') as f:
    while filesize:
        if filesize >= buffer:  # >=是因为如果刚好等于的情况出现也是可以的。
            content = f.read(buffer)  # 每次读取出来的内容
            sk.send(content)
            filesize -= buffer  # 每次减去读取的大小
        else:  # 那么说明剩余的不够一次读取的大小了,那么只要把剩下的读取出来发送过去就行了
            content = f.read(filesize)
            sk.send(content)
            break
sk.close()
