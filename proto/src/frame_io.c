/* frame_io.c - blocking frame reading and sending with deadlines, for clients and worker threads. */
#include <stdlib.h>
#include <string.h>

#include "sockgate/error.h"
#include "sockgate/frame.h"
#include "sockgate/net.h"

/* Bodies up to this size go out in one write with their header (one packet for small replies). */
#define SEND_COALESCE_MAX 16384

void sg_frame_reader_init(struct sg_frame_reader *r, int fd, size_t max_header)
{
    r->fd = fd;
    r->off = 0;
    r->len = 0;
    sg_frame_decoder_init(&r->dec, max_header);
}

void sg_frame_reader_free(struct sg_frame_reader *r)
{
    sg_frame_decoder_free(&r->dec);
}

int sg_frame_reader_next(struct sg_frame_reader *r, enum sg_frame_event *ev, const uint8_t **chunk,
                         size_t *chunk_len, int64_t deadline_ms)
{
    for (;;) {
        size_t used = 0, got = 0;
        int rc;
        *ev = sg_frame_decode(&r->dec, r->buf + r->off, r->len - r->off, &used, chunk, chunk_len);
        r->off += used;
        if (*ev == SG_FRAME_ERROR)
            return SG_ERR_PROTO;
        if (*ev != SG_FRAME_NEED_MORE)
            return SG_OK;
        /* Everything buffered was consumed (body chunks point into buf and were handed out). */
        r->off = 0;
        r->len = 0;
        rc = sg_read_some(r->fd, r->buf, sizeof r->buf, &got, deadline_ms);
        if (rc != SG_OK)
            return rc;
        r->len = got;
    }
}

int sg_frame_send(int fd, const json_t *header, const void *body, size_t body_len, int64_t deadline_ms)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = sg_frame_encode_header(header, 0, &buf, &len);
    if (rc != SG_OK)
        return rc;
    if (body_len > 0 && body_len <= SEND_COALESCE_MAX) {
        uint8_t *joined = realloc(buf, len + body_len);
        if (!joined) {
            free(buf);
            return SG_ERR_NOMEM;
        }
        buf = joined;
        memcpy(buf + len, body, body_len);
        len += body_len;
        body_len = 0;
    }
    rc = sg_write_all(fd, buf, len, deadline_ms);
    free(buf);
    if (rc == SG_OK && body_len > 0)
        rc = sg_write_all(fd, body, body_len, deadline_ms);
    return rc;
}
