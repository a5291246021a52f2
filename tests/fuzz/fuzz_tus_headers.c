/*
 * fuzz_tus_headers.c - the gateway's tus header checks (gateway/validate_tus.c) on arbitrary bytes.
 * The first byte picks what the rest is: 0 an Upload-Metadata value, 1 an Upload-Checksum value,
 * 2 base64 text (decoded, then compared with a re-encoding of what came out).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sockgate/error.h"
#include "validate.h"

/* The router's name buffer holds 1024 bytes; the gateway decodes filename into one that size. */
#define NAME_MAX_BYTES 1024

static void b64_encode(const unsigned char *in, size_t len, char *out)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < len ? (uint32_t)in[i + 1] << 8 : 0) |
                     (i + 2 < len ? in[i + 2] : 0);
        out[o++] = tab[v >> 18 & 63];
        out[o++] = tab[v >> 12 & 63];
        out[o++] = i + 1 < len ? tab[v >> 6 & 63] : '=';
        out[o++] = i + 2 < len ? tab[v & 63] : '=';
    }
    out[o] = '\0';
}

static void fuzz_metadata(const char *text)
{
    char name[NAME_MAX_BYTES], err[200] = "";
    int rc = validate_tus_metadata(text, name, sizeof name, err, sizeof err);
    if (rc == SG_OK) {
        /* A name for the file service's checks: non-empty, NUL-terminated inside the buffer. */
        if (name[0] == '\0' || strnlen(name, sizeof name) == sizeof name || !strstr(text, "filename"))
            abort();
    } else if ((rc != SG_ERR_INVALID && rc != SG_ERR_INVALID_NAME) || !err[0] || name[0] != '\0') {
        abort();
    }
}

static void fuzz_checksum(const char *text)
{
    char alg[8], hex[65], err[160] = "";
    size_t want;
    if (validate_tus_checksum(text, alg, hex, err, sizeof err) != SG_OK) {
        if (!err[0])
            abort();
        return;
    }
    want = strcmp(alg, "sha1") == 0 ? 40 : strcmp(alg, "sha256") == 0 ? 64 : strcmp(alg, "md5") == 0 ? 32 : 0;
    if (want == 0 || strlen(hex) != want || strspn(hex, "0123456789abcdef") != want)
        abort();
}

static void fuzz_base64(const char *text, size_t len)
{
    unsigned char out[4096];
    char again[4096 * 4 / 3 + 8];
    long n = validate_base64_decode(text, len, out, sizeof out);
    size_t stripped = len;
    if (n < 0)
        return;
    /* What decodes must be what an encoder would write, padding aside. */
    b64_encode(out, (size_t)n, again);
    while (stripped > 0 && text[stripped - 1] == '=')
        stripped--;
    if (strncmp(again, text, stripped) != 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text;
    if (size < 1 || size > 20000)
        return 0;
    text = malloc(size);
    if (!text)
        return 0;
    memcpy(text, data + 1, size - 1);
    text[size - 1] = '\0';
    switch (data[0] % 3) {
    case 0:
        fuzz_metadata(text);
        break;
    case 1:
        fuzz_checksum(text);
        break;
    default:
        if (size - 1 <= 4096 * 4 / 3)
            fuzz_base64(text, strlen(text));
        break;
    }
    free(text);
    return 0;
}
