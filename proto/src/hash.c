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

int sg_hash_init(struct sg_hash *h, int want_md5)
{
    memset(h, 0, sizeof *h);
    h->sha256 = digest_new(EVP_sha256());
    if (!h->sha256)
        return SG_ERR_NOMEM;
    if (want_md5) {
        h->md5 = digest_new(EVP_md5());
        if (!h->md5) {
            sg_hash_free(h);
            return SG_ERR_NOMEM;
        }
    }
    return SG_OK;
}

void sg_hash_update(struct sg_hash *h, const void *buf, size_t len)
{
    if (h->sha256)
        EVP_DigestUpdate(h->sha256, buf, len);
    if (h->md5)
        EVP_DigestUpdate(h->md5, buf, len);
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

void sg_hash_free(struct sg_hash *h)
{
    EVP_MD_CTX_free(h->sha256);
    EVP_MD_CTX_free(h->md5);
    h->sha256 = NULL;
    h->md5 = NULL;
}
