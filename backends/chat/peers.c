/* peers.c - the bounded table of chat peers: who may be replied to, and when each last wrote. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat_int.h"
#include "sockgate/error.h"

/* FNV-1a: the address texts are short and the table is ours, so a simple hash is enough. */
static unsigned hash_addr(const char *s, unsigned nbuckets)
{
    uint32_t h = 2166136261u;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 16777619u;
    }
    return h & (nbuckets - 1);
}

int peers_init(struct chat_peers *p, unsigned cap)
{
    memset(p, 0, sizeof *p);
    p->nbuckets = 16;
    while (p->nbuckets < cap * 2)
        p->nbuckets *= 2;
    p->slots = calloc(cap, sizeof *p->slots);
    p->buckets = calloc(p->nbuckets, sizeof *p->buckets);
    if (!p->slots || !p->buckets) {
        peers_free(p);
        return SG_ERR_NOMEM;
    }
    p->cap = cap;
    return SG_OK;
}

void peers_free(struct chat_peers *p)
{
    free(p->slots);
    free(p->buckets);
    memset(p, 0, sizeof *p);
}

struct chat_peer *peers_find(struct chat_peers *p, const char *addr)
{
    struct chat_peer *e = p->buckets[hash_addr(addr, p->nbuckets)];
    while (e && strcmp(e->addr, addr) != 0)
        e = e->hnext;
    return e;
}

static void list_unlink(struct chat_peers *p, struct chat_peer *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        p->newest = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        p->oldest = e->prev;
    e->prev = e->next = NULL;
}

static void list_push_newest(struct chat_peers *p, struct chat_peer *e)
{
    e->prev = NULL;
    e->next = p->newest;
    if (p->newest)
        p->newest->prev = e;
    else
        p->oldest = e;
    p->newest = e;
}

static void hash_unlink(struct chat_peers *p, struct chat_peer *e)
{
    struct chat_peer **link = &p->buckets[hash_addr(e->addr, p->nbuckets)];
    while (*link && *link != e)
        link = &(*link)->hnext;
    if (*link)
        *link = e->hnext;
    e->hnext = NULL;
}

struct chat_peer *peers_touch(struct chat_peers *p, const char *addr, const struct sockaddr *sa, socklen_t salen,
                              int64_t now_ms)
{
    struct chat_peer *e = peers_find(p, addr);
    unsigned b;

    if (e) {
        list_unlink(p, e);
    } else {
        if (p->count < p->cap) {
            e = &p->slots[p->count++];
        } else {
            /* Full: the least recently seen peer makes room and can no longer be replied to. */
            e = p->oldest;
            list_unlink(p, e);
            hash_unlink(p, e);
        }
        memset(e, 0, sizeof *e);
        snprintf(e->addr, sizeof e->addr, "%s", addr);
        if (salen > sizeof e->ss)
            salen = sizeof e->ss;
        memcpy(&e->ss, sa, salen);
        e->sslen = salen;
        e->first_seen = now_ms;
        b = hash_addr(e->addr, p->nbuckets);
        e->hnext = p->buckets[b];
        p->buckets[b] = e;
    }
    e->last_seen = now_ms;
    e->messages++;
    list_push_newest(p, e);
    return e;
}

json_t *peers_to_json(const struct chat_peers *p)
{
    json_t *arr = json_array();
    if (!arr)
        return NULL;
    for (const struct chat_peer *e = p->newest; e; e = e->next) {
        json_t *o = json_pack("{s:s, s:I, s:I, s:I}", "addr", e->addr, "first_seen_ms", (json_int_t)e->first_seen,
                              "last_seen_ms", (json_int_t)e->last_seen, "messages", (json_int_t)e->messages);
        if (!o || json_array_append_new(arr, o) != 0) {
            json_decref(arr);
            return NULL;
        }
    }
    return arr;
}
