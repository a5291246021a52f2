/*
 * body.c - receives a request's body into a file while hashing it: the fast
 * path of uploads (docs/internals/file.md, "Fast uploads"), shared by upload
 * and an upload session's append.
 */
#include "body.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "sockgate/error.h"
#include "sockgate/net.h"

/*
 * A body over BODY_PIPELINE bytes is received in two alternating buffers of
 * BODY_BUF bytes: once the frame reader's 64 KiB buffer is used up, the body
 * is read straight from the socket into one while the other is hashed on a
 * helper thread (hasher.c). The socket is told not to wake us before
 * BODY_LOWAT bytes are queued (SO_RCVLOWAT), so a sender's small pieces
 * (17 KiB from the gateway) arrive as one read, one write and one hash block
 * of a few hundred KiB instead of one of each per piece.
 */
#define BODY_PIPELINE (UINT64_C(1) << 20)
#define BODY_BUF (512u * 1024u)
#define BODY_LOWAT (256 * 1024)
/*
 * How long to wait for BODY_LOWAT bytes before taking whatever came: a slow
 * sender that makes progress must not look idle to the I/O timeout.
 */
#define BODY_LOWAT_WAIT_MS 200

int file_write_all(int fd, const uint8_t *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

void file_body_start(struct file_body *b)
{
    b->got = 0;
    b->write_errno = 0;
    b->cur = 0;
    b->is_direct = 0;
    b->lowat = 0;
    b->has_hasher = 0;
    memset(&b->bufs, 0, sizeof b->bufs);
    if (b->size > BODY_PIPELINE)
        /* A session's append is a piece of a whole file: its pages are chosen for the file's size. */
        sg_iobuf_alloc(&b->bufs, 2 * (size_t)BODY_BUF, b->whole_size > b->size ? b->whole_size : b->size);
    b->has_hasher = b->bufs.data && (b->hash[0] || b->hash[1]) &&
                    hasher_start(&b->hasher, b->hash[0], b->hash[1]) == SG_OK;
}

/*
 * Returns the next event of the frame like file_conn_next. Bytes the frame
 * reader holds are used first; after that, body bytes are read into
 * b->bufs.data[cur] directly, never more than the body has left, so the
 * bytes of a pipelined next request stay in the socket for the frame reader.
 * They go through the connection's decoder all the same, which keeps its count.
 */
static int next_event(struct file_body *b, enum sg_frame_event *ev, const uint8_t **chunk, size_t *len)
{
    struct sg_frame_reader *rd = b->c->rd;
    uint64_t left = rd->dec.body_left;
    uint8_t *buf;
    size_t want, got = 0, used = 0;
    int rc;

    b->is_direct = 0;
    if (!b->bufs.data || rd->off < rd->len || left == 0)
        return file_conn_next(b->c, ev, chunk, len);
    buf = b->bufs.data + (size_t)b->cur * BODY_BUF;
    want = left < BODY_BUF ? (size_t)left : BODY_BUF;
    rc = sg_read_batched(b->c->fd, buf, want, left < BODY_LOWAT ? (size_t)left : BODY_LOWAT, BODY_LOWAT_WAIT_MS,
                         b->c->srv->io_timeout_ms, &b->lowat, &got);
    if (rc != SG_OK)
        return rc;
    b->is_direct = 1;
    *ev = sg_frame_decode(&rd->dec, buf, got, &used, chunk, len);
    return *ev == SG_FRAME_BODY && used == got ? SG_OK : SG_ERR_INTERNAL;
}

/* Feeds a body chunk into the digests: on the helper thread when there is one and the chunk is ours. */
static void hash_chunk(struct file_body *b, const uint8_t *chunk, size_t len)
{
    if (b->has_hasher && b->is_direct) {
        hasher_submit(&b->hasher, chunk, len);
        b->cur ^= 1; /* the next read fills the other buffer, whose block the submit saw hashed */
        return;
    }
    /* The frame reader reuses its buffer on its next read: hash this chunk now, in order. */
    if (b->has_hasher)
        hasher_wait(&b->hasher);
    for (int i = 0; i < 2; i++)
        if (b->hash[i])
            sg_hash_update(b->hash[i], chunk, len);
}

int file_body_receive(struct file_body *b)
{
    enum sg_frame_event ev = SG_FRAME_NEED_MORE;
    const uint8_t *chunk;
    size_t len;
    while (ev != SG_FRAME_END) {
        int rc = next_event(b, &ev, &chunk, &len);
        if (rc != SG_OK)
            return rc; /* a short body: disconnect, timeout or stop */
        if (ev != SG_FRAME_BODY)
            continue;
        hash_chunk(b, chunk, len);
        if (file_write_all(b->fd, chunk, len) != 0) {
            b->write_errno = errno;
            /* What is left is drained through the frame reader, whatever its size. */
            sg_set_rcvlowat(b->c->fd, 1, &b->lowat);
            return FILE_BODY_WRITE_FAILED;
        }
        b->got += len;
    }
    return SG_OK;
}

void file_body_end(struct file_body *b)
{
    if (b->has_hasher)
        hasher_stop(&b->hasher); /* the hash is complete, and the buffers free, only once the helper is done */
    b->has_hasher = 0;
    if (b->lowat)
        sg_set_rcvlowat(b->c->fd, 1, &b->lowat); /* the next request's header may be a few bytes */
    sg_iobuf_free(&b->bufs);
}
