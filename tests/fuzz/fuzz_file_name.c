/* fuzz_file_name.c - the file service's name check on arbitrary bytes. */
#include <stdint.h>
#include <string.h>
#include <stdlib.h>

#include "file/name.h"
#include "sockgate/error.h"
#include "sockgate/text.h"

/*
 * Whatever the fuzzer finds, an accepted name must be one flat, visible
 * directory entry: non-empty, at most FILE_NAME_MAX bytes, valid UTF-8, no
 * leading '.', and no '/', '\\', NUL or C0/DEL byte anywhere.
 */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char why[256] = "";
    int rc = file_name_check((const char *)data, size, why, sizeof why);
    if (rc == SG_OK) {
        if (size == 0 || size > FILE_NAME_MAX || data[0] == '.' || !sg_utf8_valid(data, size))
            abort();
        for (size_t i = 0; i < size; i++)
            if (data[i] == '/' || data[i] == '\\' || data[i] < 0x20 || data[i] == 0x7f)
                abort();
    } else if (rc != SG_ERR_INVALID_NAME || why[0] == '\0') {
        abort();
    }
    return 0;
}
