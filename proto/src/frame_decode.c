/* frame_decode.c - the incremental frame decoder: any split, any gluing, no body buffering. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sockgate/error.h"
#include "sockgate/frame.h"

enum { ST_LEN, ST_HEADER, ST_BODY, ST_END, ST_ERROR };

void sg_frame_decoder_init(struct sg_frame_decoder *d, size_t max_header)
{
    memset(d, 0, sizeof *d);
    d->max_header = max_header ? max_header : SG_FRAME_DEFAULT_MAX_HEADER;
    d->state = ST_LEN;
}

void sg_frame_decoder_free(struct sg_frame_decoder *d)
{
    free(d->header_buf);
    d->header_buf = NULL;
    json_decref(d->header);
    d->header = NULL;
    d->state = ST_ERROR;
}

json_t *sg_frame_decoder_header(const struct sg_frame_decoder *d)
{
    return d->header;
}

uint64_t sg_frame_decoder_body_size(const struct sg_frame_decoder *d)
{
    return d->body_size;
}

const char *sg_frame_decoder_error(const struct sg_frame_decoder *d)
{
    return d->errmsg[0] ? d->errmsg : "no error";
}

static enum sg_frame_event fail(struct sg_frame_decoder *d, const char *msg)
{
    if (msg)
        snprintf(d->errmsg, sizeof d->errmsg, "%s", msg);
    d->err = SG_ERR_PROTO;
    d->state = ST_ERROR;
    free(d->header_buf);
    d->header_buf = NULL;
    return SG_FRAME_ERROR;
}

/* Takes the 4 length bytes; on success the decoder waits for the header. */
static enum sg_frame_event start_header(struct sg_frame_decoder *d)
{
    uint32_t n = (uint32_t)d->len_bytes[0] | (uint32_t)d->len_bytes[1] << 8 |
                 (uint32_t)d->len_bytes[2] << 16 | (uint32_t)d->len_bytes[3] << 24;
    if (n < SG_FRAME_MIN_HEADER || n > d->max_header) {
        snprintf(d->errmsg, sizeof d->errmsg, "header length %u outside 2..%zu", n, d->max_header);
        return fail(d, NULL);
    }
    d->header_buf = malloc(n);
    if (!d->header_buf)
        return fail(d, "out of memory for the header");
    d->header_len = n;
    d->header_have = 0;
    d->state = ST_HEADER;
    return SG_FRAME_NEED_MORE;
}

/* Parses the complete header; on success the frame's body (if any) follows. */
static enum sg_frame_event finish_header(struct sg_frame_decoder *d)
{
    json_t *header = NULL;
    uint64_t body = 0;
    int rc = sg_frame_parse_header(d->header_buf, d->header_len, &header, &body, d->errmsg,
                                   sizeof d->errmsg);
    free(d->header_buf);
    d->header_buf = NULL;
    if (rc != SG_OK)
        return fail(d, NULL);
    json_decref(d->header);
    d->header = header;
    d->body_size = body;
    d->body_left = body;
    d->state = body ? ST_BODY : ST_END;
    return SG_FRAME_HEADER;
}

enum sg_frame_event sg_frame_decode(struct sg_frame_decoder *d, const uint8_t *buf, size_t len,
                                    size_t *consumed, const uint8_t **chunk, size_t *chunk_len)
{
    size_t used = 0;
    enum sg_frame_event ev = SG_FRAME_NEED_MORE;

    *chunk = NULL;
    *chunk_len = 0;
    while (ev == SG_FRAME_NEED_MORE && (used < len || d->state == ST_END || d->state == ST_ERROR)) {
        size_t avail = len - used, n;
        switch (d->state) {
        case ST_LEN:
            n = 4 - d->len_have;
            n = n < avail ? n : avail;
            memcpy(d->len_bytes + d->len_have, buf + used, n);
            d->len_have += n;
            used += n;
            if (d->len_have == 4)
                ev = start_header(d);
            break;
        case ST_HEADER:
            n = d->header_len - d->header_have;
            n = n < avail ? n : avail;
            memcpy(d->header_buf + d->header_have, buf + used, n);
            d->header_have += n;
            used += n;
            if (d->header_have == d->header_len)
                ev = finish_header(d);
            break;
        case ST_BODY:
            n = d->body_left < avail ? (size_t)d->body_left : avail;
            *chunk = buf + used;
            *chunk_len = n;
            d->body_left -= n;
            used += n;
            if (d->body_left == 0)
                d->state = ST_END;
            ev = SG_FRAME_BODY;
            break;
        case ST_END:
            d->state = ST_LEN;
            d->len_have = 0;
            ev = SG_FRAME_END;
            break;
        default:
            ev = SG_FRAME_ERROR;
            break;
        }
    }
    *consumed = used;
    return ev;
}
