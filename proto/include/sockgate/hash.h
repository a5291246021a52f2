/* hash.h - streaming sha256 (always) and md5 (on request) through OpenSSL's libcrypto. */
#ifndef SOCKGATE_HASH_H
#define SOCKGATE_HASH_H

#include <stddef.h>

#define SG_SHA256_HEX 65 /* 64 hex digits and NUL */
#define SG_MD5_HEX 33

struct sg_hash {
    void *sha256; /* EVP_MD_CTX * */
    void *md5;    /* EVP_MD_CTX *, NULL unless asked */
};

/* Starts a sha256 (and an md5 when want_md5) over a stream; SG_OK or SG_ERR_NOMEM. */
int sg_hash_init(struct sg_hash *h, int want_md5);

/* Feeds len bytes into every digest h computes. */
void sg_hash_update(struct sg_hash *h, const void *buf, size_t len);

/* Writes the lower-case hex digests (md5_hex may be NULL) and frees h. */
void sg_hash_final(struct sg_hash *h, char sha256_hex[SG_SHA256_HEX], char *md5_hex);

/* Frees h without producing digests (safe on a zeroed or finalised h). */
void sg_hash_free(struct sg_hash *h);

#endif
