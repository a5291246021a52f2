/* fuzz_argv_split.c - the exec service's raw command-line splitter on arbitrary bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "exec/argv_split.h"
#include "sockgate/error.h"

/*
 * Checks the splitter's promises: on success argv is NULL-terminated, has at
 * most EXEC_SPLIT_MAX_ARGS words, and its words never hold more bytes than
 * the input (quoting only ever removes bytes); on failure there is a reason.
 */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char **argv = NULL, err[256] = "";
    size_t argc = 0, total = 0;
    int rc = exec_argv_split((const char *)data, size, &argv, &argc, err, sizeof err);
    if (rc == SG_OK) {
        if (!argv || argv[argc] != NULL || argc > EXEC_SPLIT_MAX_ARGS)
            abort();
        for (size_t i = 0; i < argc; i++)
            total += strlen(argv[i]);
        if (total > size)
            abort();
        free(argv);
    } else if (rc == SG_ERR_INVALID) {
        if (err[0] == '\0')
            abort();
    } else if (rc != SG_ERR_NOMEM) {
        abort();
    }
    return 0;
}
