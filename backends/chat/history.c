/* history.c - the chat's bounded history: a ring of the last messages, each kept as its encoded frame. */
#include <stdlib.h>
#include <string.h>

#include "chat_int.h"
#include "sockgate/error.h"

int history_init(struct chat_history *h, unsigned cap)
{
    memset(h, 0, sizeof *h);
    h->ring = calloc(cap, sizeof *h->ring);
    if (!h->ring)
        return SG_ERR_NOMEM;
    h->cap = cap;
    return SG_OK;
}

void history_free(struct chat_history *h)
{
    if (!h->ring)
        return;
    for (unsigned i = 0; i < h->cap; i++)
        free(h->ring[i].frame);
    free(h->ring);
    memset(h, 0, sizeof *h);
}

int history_append(struct chat_history *h, json_t *msg, uint64_t *seq, uint64_t *evicted)
{
    struct chat_entry *e;
    uint8_t *frame = NULL;
    size_t frame_len = 0;
    uint64_t next = h->last_seq + 1;
    int rc;

    *evicted = 0;
    if (json_object_set_new(msg, "seq", json_integer((json_int_t)next)) != 0)
        return SG_ERR_NOMEM;
    /* Encoded once here: every subscriber and every replay copies these bytes. */
    rc = sg_frame_encode_header(msg, 0, &frame, &frame_len);
    if (rc != SG_OK)
        return rc;
    if (h->count == h->cap) {
        e = &h->ring[h->head];
        *evicted = e->seq;
        free(e->frame);
        h->head = (h->head + 1) % h->cap;
        h->count--;
    }
    e = &h->ring[(h->head + h->count) % h->cap];
    e->seq = next;
    e->frame = frame;
    e->frame_len = frame_len;
    h->count++;
    h->last_seq = next;
    *seq = next;
    return SG_OK;
}

uint64_t history_first_seq(const struct chat_history *h)
{
    return h->count ? h->ring[h->head].seq : 0;
}

const struct chat_entry *history_get(const struct chat_history *h, uint64_t seq)
{
    uint64_t first = history_first_seq(h);
    /* Sequence numbers in the ring are contiguous, so the slot follows from the distance to the oldest. */
    if (!h->count || seq < first || seq > h->last_seq)
        return NULL;
    return &h->ring[(h->head + (unsigned)(seq - first)) % h->cap];
}
