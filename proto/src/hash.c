/* hash.c - streaming digests on libcrypto's EVP interface. */
#include "sockgate/hash.h"

#include <openssl/evp.h>
#include <string.h>

#include "sockgate/error.h"
#include "sockgate/text.h"

static EVP_MD_CTX *digest_new(const EVP_MD *md)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (ctx && EVP_DigestInit_ex(ctx, md, NULL) != 1) {
        EVP_MD_CTX_free(ctx);
        ctx = NULL;
    }
    return ctx;
}

int sg_hash_start(struct sg_hash *h, unsigned algs)
{
    memset(h, 0, sizeof *h);
    if (((algs & SG_HASH_SHA256) && !(h->sha256 = digest_new(EVP_sha256()))) ||
        ((algs & SG_HASH_MD5) && !(h->md5 = digest_new(EVP_md5()))) ||
        ((algs & SG_HASH_SHA1) && !(h->sha1 = digest_new(EVP_sha1())))) {
        sg_hash_free(h);
        return SG_ERR_NOMEM;
    }
    return SG_OK;
}

int sg_hash_init(struct sg_hash *h, int want_md5)
{
    return sg_hash_start(h, SG_HASH_SHA256 | (want_md5 ? SG_HASH_MD5 : 0));
}

/* Returns a new copy of ctx (NULL stays NULL); *failed is set when the copy could not be made. */
static EVP_MD_CTX *digest_dup(const EVP_MD_CTX *ctx, int *failed)
{
    EVP_MD_CTX *dup;
    if (!ctx)
        return NULL;
    dup = EVP_MD_CTX_new();
    if (dup && EVP_MD_CTX_copy_ex(dup, ctx) != 1) {
        EVP_MD_CTX_free(dup);
        dup = NULL;
    }
    if (!dup)
        *failed = 1;
    return dup;
}

int sg_hash_copy(struct sg_hash *dst, const struct sg_hash *src)
{
    int failed = 0;
    dst->sha256 = digest_dup(src->sha256, &failed);
    dst->md5 = digest_dup(src->md5, &failed);
    dst->sha1 = digest_dup(src->sha1, &failed);
    if (failed) {
        sg_hash_free(dst);
        return SG_ERR_NOMEM;
    }
    return SG_OK;
}

void sg_hash_update(struct sg_hash *h, const void *buf, size_t len)
{
    if (h->sha256)
        EVP_DigestUpdate(h->sha256, buf, len);
    if (h->md5)
        EVP_DigestUpdate(h->md5, buf, len);
    if (h->sha1)
        EVP_DigestUpdate(h->sha1, buf, len);
}

static void digest_final_hex(EVP_MD_CTX *ctx, char *hex)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_DigestFinal_ex(ctx, md, &n);
    sg_hex_encode(md, n, hex);
}

void sg_hash_final(struct sg_hash *h, char sha256_hex[SG_SHA256_HEX], char *md5_hex)
{
    if (h->sha256)
        digest_final_hex(h->sha256, sha256_hex);
    if (md5_hex && h->md5)
        digest_final_hex(h->md5, md5_hex);
    sg_hash_free(h);
}

void sg_hash_final_all(struct sg_hash *h, char *sha256_hex, char *md5_hex, char *sha1_hex)
{
    if (sha256_hex && h->sha256)
        digest_final_hex(h->sha256, sha256_hex);
    if (md5_hex && h->md5)
        digest_final_hex(h->md5, md5_hex);
    if (sha1_hex && h->sha1)
        digest_final_hex(h->sha1, sha1_hex);
    sg_hash_free(h);
}

void sg_hash_free(struct sg_hash *h)
{
    EVP_MD_CTX_free(h->sha256);
    EVP_MD_CTX_free(h->md5);
    EVP_MD_CTX_free(h->sha1);
    h->sha256 = NULL;
    h->md5 = NULL;
    h->sha1 = NULL;
}
