/*
 * hasher.c - hashes an upload's blocks on a helper thread. sha256 costs about
 * as much CPU as receiving and writing the bytes together (0.7 s per GiB with
 * SHA-NI), so on its own thread it overlaps the next block's recv and write
 * instead of adding to them.
 */
#include "hasher.h"

#include <signal.h>

#include "sockgate/error.h"

/* sha256 and md5 through libcrypto need little stack. */
#define HASHER_STACK (256u * 1024u)

static void *hasher_main(void *arg)
{
    struct hasher *h = arg;
    pthread_mutex_lock(&h->lock);
    for (;;) {
        while (!h->block && !h->is_ending)
            pthread_cond_wait(&h->cond, &h->lock);
        if (!h->block)
            break;
        pthread_mutex_unlock(&h->lock);
        if (h->hash[0])
            sg_hash_update(h->hash[0], h->block, h->len);
        if (h->hash[1])
            sg_hash_update(h->hash[1], h->block, h->len);
        pthread_mutex_lock(&h->lock);
        h->block = NULL;
        pthread_cond_broadcast(&h->cond);
    }
    pthread_mutex_unlock(&h->lock);
    return NULL;
}

int hasher_start(struct hasher *h, struct sg_hash *hash, struct sg_hash *also)
{
    pthread_attr_t attr;
    sigset_t all, old;
    int rc;

    h->hash[0] = hash;
    h->hash[1] = also;
    h->block = NULL;
    h->len = 0;
    h->is_ending = 0;
    if (pthread_mutex_init(&h->lock, NULL) != 0)
        return SG_ERR_SYS;
    if (pthread_cond_init(&h->cond, NULL) != 0) {
        pthread_mutex_destroy(&h->lock);
        return SG_ERR_SYS;
    }
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, HASHER_STACK);
    /* The helper takes no signals: the host's handlers stay on the threads that expect them. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&h->thread, &attr, hasher_main, h);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        pthread_cond_destroy(&h->cond);
        pthread_mutex_destroy(&h->lock);
        return SG_ERR_SYS;
    }
    return SG_OK;
}

void hasher_wait(struct hasher *h)
{
    pthread_mutex_lock(&h->lock);
    while (h->block)
        pthread_cond_wait(&h->cond, &h->lock);
    pthread_mutex_unlock(&h->lock);
}

void hasher_submit(struct hasher *h, const void *block, size_t len)
{
    pthread_mutex_lock(&h->lock);
    while (h->block)
        pthread_cond_wait(&h->cond, &h->lock);
    h->block = block;
    h->len = len;
    pthread_cond_broadcast(&h->cond);
    pthread_mutex_unlock(&h->lock);
}

void hasher_stop(struct hasher *h)
{
    pthread_mutex_lock(&h->lock);
    while (h->block)
        pthread_cond_wait(&h->cond, &h->lock);
    h->is_ending = 1;
    pthread_cond_broadcast(&h->cond);
    pthread_mutex_unlock(&h->lock);
    pthread_join(h->thread, NULL);
    pthread_cond_destroy(&h->cond);
    pthread_mutex_destroy(&h->lock);
}
