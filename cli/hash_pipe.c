/*
 * hash_pipe.c - the hashing thread behind put and get. sha256 runs at about
 * the speed of a loopback copy, so hashing on the I/O thread doubles a
 * transfer's wall time; here the I/O thread only fills buffers and the
 * hashing thread digests them in order, both running at once on two cores.
 */
#include "hash_pipe.h"

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>

#include "sockgate/error.h"
#include "sockgate/iobuf.h"

struct hash_pipe {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t has_work;  /* signalled on submit, finish and abort */
    pthread_cond_t has_free;  /* signalled when a buffer has been hashed */
    struct sg_iobuf ring;     /* HASH_PIPE_SLOTS buffers, back to back */
    size_t lens[HASH_PIPE_SLOTS];
    uint64_t submitted;       /* buffers handed over so far; slot = count % HASH_PIPE_SLOTS */
    uint64_t hashed;          /* buffers fully digested so far */
    int closing;              /* finish: no more submissions, hash what is left */
    int aborting;             /* abort: stop at once */
    struct sg_hash hash;
};

static void *hash_loop(void *arg)
{
    struct hash_pipe *p = arg;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        size_t idx, len;
        while (p->hashed == p->submitted && !p->closing && !p->aborting)
            pthread_cond_wait(&p->has_work, &p->lock);
        if (p->aborting || p->hashed == p->submitted)
            break;
        idx = (size_t)(p->hashed % HASH_PIPE_SLOTS);
        len = p->lens[idx];
        /* The producer never writes a submitted buffer until hashed moves past it: no lock needed to read it. */
        pthread_mutex_unlock(&p->lock);
        sg_hash_update(&p->hash, p->ring.data + idx * HASH_PIPE_SLOT_SIZE, len);
        pthread_mutex_lock(&p->lock);
        p->hashed++;
        pthread_cond_signal(&p->has_free);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

/* Frees p and what it holds; its thread is not running (never started, or joined). */
static void release(struct hash_pipe *p)
{
    sg_hash_free(&p->hash);
    pthread_cond_destroy(&p->has_free);
    pthread_cond_destroy(&p->has_work);
    pthread_mutex_destroy(&p->lock);
    sg_iobuf_free(&p->ring);
    free(p);
}

struct hash_pipe *hash_pipe_start(uint64_t transfer_size)
{
    struct hash_pipe *p = calloc(1, sizeof *p);
    sigset_t all, old;
    int rc;
    if (!p)
        return NULL;
    /* On 2 MiB pages for a large transfer: recv() into 4 KiB ones cost most of a get's system time. */
    if (sg_iobuf_alloc(&p->ring, (size_t)HASH_PIPE_SLOTS * HASH_PIPE_SLOT_SIZE, transfer_size) != SG_OK ||
        sg_hash_init(&p->hash, 0) != SG_OK) {
        sg_iobuf_free(&p->ring);
        free(p);
        return NULL;
    }
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->has_work, NULL);
    pthread_cond_init(&p->has_free, NULL);
    /* Signals (SIGINT removing get's temporary file) belong to the I/O thread: the hasher blocks them all. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&p->thread, NULL, hash_loop, p);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        release(p);
        return NULL;
    }
    return p;
}

uint8_t *hash_pipe_take(struct hash_pipe *p)
{
    size_t idx;
    pthread_mutex_lock(&p->lock);
    while (p->submitted - p->hashed == HASH_PIPE_SLOTS)
        pthread_cond_wait(&p->has_free, &p->lock);
    idx = (size_t)(p->submitted % HASH_PIPE_SLOTS);
    pthread_mutex_unlock(&p->lock);
    return p->ring.data + idx * HASH_PIPE_SLOT_SIZE;
}

void hash_pipe_submit(struct hash_pipe *p, size_t len)
{
    pthread_mutex_lock(&p->lock);
    p->lens[p->submitted % HASH_PIPE_SLOTS] = len;
    p->submitted++;
    pthread_cond_signal(&p->has_work);
    pthread_mutex_unlock(&p->lock);
}

/* Tells the thread to end (after the remaining buffers unless aborting), joins it and frees p. */
static void stop(struct hash_pipe *p, int aborting, char *sha)
{
    pthread_mutex_lock(&p->lock);
    p->closing = 1;
    p->aborting = aborting;
    pthread_cond_signal(&p->has_work);
    pthread_mutex_unlock(&p->lock);
    pthread_join(p->thread, NULL);
    if (sha)
        sg_hash_final(&p->hash, sha, NULL);
    release(p);
}

void hash_pipe_finish(struct hash_pipe *p, char sha[SG_SHA256_HEX])
{
    stop(p, 0, sha);
}

void hash_pipe_abort(struct hash_pipe *p)
{
    if (p)
        stop(p, 1, NULL);
}
