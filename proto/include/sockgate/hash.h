/* hash.h - streaming sha256, md5 and sha1 (each on request) through OpenSSL's libcrypto. */
#ifndef SOCKGATE_HASH_H
#define SOCKGATE_HASH_H

#include <stddef.h>

#define SG_SHA256_HEX 65 /* 64 hex digits and NUL */
#define SG_MD5_HEX 33
#define SG_SHA1_HEX 41

/* The digests an sg_hash can compute at once (sg_hash_start). */
enum sg_hash_alg { SG_HASH_SHA256 = 1, SG_HASH_MD5 = 2, SG_HASH_SHA1 = 4 };

struct sg_hash {
    void *sha256; /* EVP_MD_CTX *, NULL unless asked */
    void *md5;    /* EVP_MD_CTX *, NULL unless asked */
    void *sha1;   /* EVP_MD_CTX *, NULL unless asked */
};

/* Starts a sha256 (and an md5 when want_md5) over a stream; SG_OK or SG_ERR_NOMEM. */
int sg_hash_init(struct sg_hash *h, int want_md5);

/* Starts the digests in algs (an OR of enum sg_hash_alg); SG_OK or SG_ERR_NOMEM. */
int sg_hash_start(struct sg_hash *h, unsigned algs);

/* Makes dst (not started, or freed) an independent copy of src's state; SG_OK or SG_ERR_NOMEM. */
int sg_hash_copy(struct sg_hash *dst, const struct sg_hash *src);

/* Feeds len bytes into every digest h computes. */
void sg_hash_update(struct sg_hash *h, const void *buf, size_t len);

/* Writes the lower-case hex digests (md5_hex may be NULL) and frees h. */
void sg_hash_final(struct sg_hash *h, char sha256_hex[SG_SHA256_HEX], char *md5_hex);

/* Writes the lower-case hex digest of each one h computes (the others' buffers untouched; any may be NULL) and frees h. */
void sg_hash_final_all(struct sg_hash *h, char *sha256_hex, char *md5_hex, char *sha1_hex);

/* Frees h without producing digests (safe on a zeroed or finalised h). */
void sg_hash_free(struct sg_hash *h);

#endif
