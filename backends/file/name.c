/* name.c - the file service's name rules, in one pure function a fuzzer can drive. */
#include "name.h"

#include <stdint.h>
#include <stdio.h>

#include "sockgate/error.h"
#include "sockgate/text.h"

static int refuse(char *why, size_t whylen, const char *reason)
{
    if (why && whylen)
        snprintf(why, whylen, "%s", reason);
    return SG_ERR_INVALID_NAME;
}

int file_name_check(const char *name, size_t len, char *why, size_t whylen)
{
    const uint8_t *s = (const uint8_t *)name;

    if (len == 0)
        return refuse(why, whylen, "the name is empty");
    if (len > FILE_NAME_MAX)
        return refuse(why, whylen, "the name is longer than 255 bytes");
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '/' || s[i] == '\\')
            return refuse(why, whylen, "the name holds a '/' or '\\' (the namespace is flat)");
        /* C0 80 is how the gateway passes on a %00 of a URL (validate_unescape): a NUL all the same. */
        if (s[i] == '\0' || (s[i] == 0xc0 && i + 1 < len && s[i + 1] == 0x80))
            return refuse(why, whylen, "the name holds a NUL byte (%00 or \\u0000)");
        if (s[i] < 0x20 || s[i] == 0x7f)
            return refuse(why, whylen, "the name holds a control character");
        /* U+0080..U+009F (C1 controls) are encoded as C2 80..C2 9F. */
        if (s[i] == 0xc2 && i + 1 < len && s[i + 1] >= 0x80 && s[i + 1] <= 0x9f)
            return refuse(why, whylen, "the name holds a control character");
    }
    /*
     * A leading dot covers "." and "..", and it keeps the namespace of
     * clients apart from the store's own entries (".upload-*", ".meta").
     * Checked after the loop, so "../x" is refused for its '/', the real reason.
     */
    if (s[0] == '.')
        return refuse(why, whylen, "the name starts with '.'");
    if (!sg_utf8_valid(s, len))
        return refuse(why, whylen, "the name is not valid UTF-8");
    return SG_OK;
}
