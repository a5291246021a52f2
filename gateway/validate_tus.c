/* validate_tus.c - tus 1.0's request headers as pure functions: Upload-Metadata and Upload-Checksum (fuzzed). */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "sockgate/error.h"
#include "validate.h"

/* Value of a base64 character, or -1. */
static int b64_value(unsigned char ch)
{
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9')
        return ch - '0' + 52;
    if (ch == '+')
        return 62;
    if (ch == '/')
        return 63;
    return -1;
}

long validate_base64_decode(const char *in, size_t len, unsigned char *out, size_t cap)
{
    uint32_t acc = 0;
    size_t o = 0, pad = 0;
    int bits = 0;
    while (len > 0 && in[len - 1] == '=' && pad < 2) {
        len--;
        pad++;
    }
    /* A lone sixth of a byte, or padding where the data needs none, is no base64 anyone wrote. */
    if (len % 4 == 1 || (pad > 0 && (len + pad) % 4 != 0))
        return -1;
    for (size_t i = 0; i < len; i++) {
        int v = b64_value((unsigned char)in[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o >= cap)
                return -1;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    /* Bits past the last byte must be zero, so one name has one spelling (RFC 4648, 3.5). */
    if (acc & ((1u << bits) - 1))
        return -1;
    return (long)o;
}

int validate_tus_checksum(const char *header, char alg[8], char hex[65], char *err, size_t errlen)
{
    static const struct {
        const char *name;
        size_t bytes;
    } algs[] = {{"sha1", 20}, {"sha256", 32}, {"md5", 16}};
    size_t n = strcspn(header, " ");
    unsigned char digest[32];

    for (size_t i = 0; i < sizeof algs / sizeof algs[0]; i++) {
        const char *b64;
        if (strlen(algs[i].name) != n || strncmp(header, algs[i].name, n) != 0)
            continue;
        b64 = header[n] == ' ' ? header + n + 1 : header + n;
        if (header[n] != ' ' ||
            validate_base64_decode(b64, strlen(b64), digest, sizeof digest) != (long)algs[i].bytes) {
            snprintf(err, errlen, "Upload-Checksum %s needs a base64 digest of %zu bytes", algs[i].name,
                     algs[i].bytes);
            return SG_ERR_INVALID;
        }
        snprintf(alg, 8, "%s", algs[i].name);
        for (size_t k = 0; k < algs[i].bytes; k++)
            snprintf(hex + 2 * k, 3, "%02x", digest[k]);
        return SG_OK;
    }
    snprintf(err, errlen, "Upload-Checksum algorithm '%.*s' is not one of sha1, sha256, md5", (int)(n > 20 ? 20 : n),
             header);
    return SG_ERR_INVALID;
}

/* Returns 1 when the key of length klen at key appears as a key in metadata before key. */
static int is_key_seen(const char *metadata, const char *key, size_t klen)
{
    for (const char *q = metadata; q < key;) {
        while (*q == ' ')
            q++;
        if (q >= key)
            break;
        if (strcspn(q, " ,") == klen && strncmp(q, key, klen) == 0)
            return 1;
        q += strcspn(q, ",");
        if (*q == ',')
            q++;
    }
    return 0;
}

static int parse_metadata(const char *metadata, char *name, size_t namelen, char *err, size_t errlen)
{
    unsigned char scratch[TUS_MAX_METADATA];
    const char *p = metadata;
    int has_name = 0;

    name[0] = '\0';
    if (strlen(metadata) > TUS_MAX_METADATA) {
        snprintf(err, errlen, "Upload-Metadata may have at most %u bytes", TUS_MAX_METADATA);
        return SG_ERR_INVALID;
    }
    while (*p) {
        const char *key, *val, *end;
        size_t klen;
        long got;
        while (*p == ' ')
            p++;
        key = p;
        end = key + strcspn(key, ",");
        klen = strcspn(key, " ,");
        if (klen == 0) {
            snprintf(err, errlen, "Upload-Metadata has an empty key");
            return SG_ERR_INVALID;
        }
        /* Keys must be unique: which of two a reader takes is anyone's guess. */
        if (is_key_seen(metadata, key, klen)) {
            snprintf(err, errlen, "Upload-Metadata names '%.*s' twice", (int)(klen > 64 ? 64 : klen), key);
            return SG_ERR_INVALID;
        }
        val = key + klen;
        if (*val == ' ')
            val++;
        if (klen == 8 && strncmp(key, "filename", 8) == 0) {
            got = validate_base64_decode(val, (size_t)(end - val), (unsigned char *)name, namelen - 1);
            if (got <= 0) {
                snprintf(err, errlen, "Upload-Metadata filename is not a base64 file name (at most %zu bytes)",
                         namelen - 1);
                name[0] = '\0';
                return SG_ERR_INVALID;
            }
            name[got] = '\0';
            if (strlen(name) != (size_t)got) {
                snprintf(err, errlen, "the file name in Upload-Metadata has a NUL byte in it");
                name[0] = '\0';
                return SG_ERR_INVALID_NAME;
            }
            has_name = 1;
        } else if (val < end && validate_base64_decode(val, (size_t)(end - val), scratch, sizeof scratch) < 0) {
            snprintf(err, errlen, "Upload-Metadata value of '%.*s' is not base64", (int)(klen > 64 ? 64 : klen), key);
            return SG_ERR_INVALID;
        }
        p = *end == ',' ? end + 1 : end;
    }
    if (!has_name) {
        snprintf(err, errlen, "Upload-Metadata must carry filename (base64): the name the file is stored under");
        return SG_ERR_INVALID;
    }
    return SG_OK;
}

int validate_tus_metadata(const char *metadata, char *name, size_t namelen, char *err, size_t errlen)
{
    int rc = parse_metadata(metadata, name, namelen, err, errlen);
    if (rc != SG_OK)
        name[0] = '\0'; /* a refused header names no file, not even its first filename */
    return rc;
}
