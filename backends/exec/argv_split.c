/* argv_split.c - the raw command line splitter: quoting rules only, never a shell. */
#include "argv_split.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "sockgate/error.h"

/*
 * Where the scanner puts words. With strings == NULL it only counts, so the
 * first pass learns the exact sizes and the second pass fills one block.
 */
struct split_out {
    char *strings;
    char **argv;
    size_t nargs;
    size_t nbytes;
};

static void emit(struct split_out *o, char c)
{
    if (o->strings)
        o->strings[o->nbytes] = c;
    o->nbytes++;
}

static int start_word(struct split_out *o, char *err, size_t errlen)
{
    if (o->nargs == EXEC_SPLIT_MAX_ARGS) {
        snprintf(err, errlen, "more than %u words on the command line", EXEC_SPLIT_MAX_ARGS);
        return SG_ERR_INVALID;
    }
    if (o->argv)
        o->argv[o->nargs] = o->strings + o->nbytes;
    o->nargs++;
    return SG_OK;
}

static int fail(char *err, size_t errlen, const char *why, size_t at)
{
    snprintf(err, errlen, "%s at byte %zu of the command line", why, at);
    return SG_ERR_INVALID;
}

/* One pass over the line; see exec_argv_split() for the rules it applies. */
static int scan(const char *buf, size_t len, struct split_out *o, char *err, size_t errlen)
{
    enum { PLAIN, SINGLE, DOUBLE } state = PLAIN;
    size_t i = 0, quote_at = 0;
    int in_word = 0, rc;

    o->nargs = 0;
    o->nbytes = 0;
    while (i < len) {
        char c = buf[i];
        if (c == '\0')
            return fail(err, errlen, "NUL byte", i);
        if (state == SINGLE) {
            if (c == '\'')
                state = PLAIN;
            else
                emit(o, c);
            i++;
            continue;
        }
        if (state == DOUBLE) {
            if (c == '"') {
                state = PLAIN;
                i++;
            } else if (c == '\\' && i + 1 < len &&
                       (buf[i + 1] == '$' || buf[i + 1] == '`' || buf[i + 1] == '"' || buf[i + 1] == '\\')) {
                emit(o, buf[i + 1]);
                i += 2;
            } else if (c == '\\' && i + 1 < len && buf[i + 1] == '\n') {
                i += 2; /* line continuation, as in sh */
            } else {
                emit(o, c);
                i++;
            }
            continue;
        }
        if (c == ' ' || c == '\t') {
            if (in_word)
                emit(o, '\0');
            in_word = 0;
            i++;
            continue;
        }
        if (c == '\\' && i + 1 < len && buf[i + 1] == '\n') {
            i += 2; /* a continuation joins lines without starting a word */
            continue;
        }
        if (c == '\\' && i + 1 == len)
            return fail(err, errlen, "backslash with nothing after it", i);
        if (!in_word) {
            rc = start_word(o, err, errlen);
            if (rc != SG_OK)
                return rc;
            in_word = 1;
        }
        if (c == '\\') {
            emit(o, buf[i + 1]);
            i += 2;
        } else if (c == '\'' || c == '"') {
            state = c == '\'' ? SINGLE : DOUBLE;
            quote_at = i;
            i++;
        } else {
            emit(o, c);
            i++;
        }
    }
    if (state == SINGLE)
        return fail(err, errlen, "unterminated single quote", quote_at);
    if (state == DOUBLE)
        return fail(err, errlen, "unterminated double quote", quote_at);
    if (in_word)
        emit(o, '\0');
    return SG_OK;
}

int exec_argv_split(const char *buf, size_t len, char ***argv_out, size_t *argc_out, char *err,
                    size_t errlen)
{
    struct split_out count = {0}, fill = {0};
    size_t ptr_bytes;
    char **block;
    int rc;

    *argv_out = NULL;
    *argc_out = 0;
    rc = scan(buf, len, &count, err, errlen);
    if (rc != SG_OK)
        return rc;
    /* Both counts are bounded by len and EXEC_SPLIT_MAX_ARGS, so the sum cannot overflow. */
    ptr_bytes = (count.nargs + 1) * sizeof(char *);
    block = malloc(ptr_bytes + count.nbytes + 1);
    if (!block) {
        snprintf(err, errlen, "out of memory splitting the command line");
        return SG_ERR_NOMEM;
    }
    fill.argv = block;
    fill.strings = (char *)block + ptr_bytes;
    rc = scan(buf, len, &fill, err, errlen);
    if (rc != SG_OK) {
        free(block);
        return rc;
    }
    block[fill.nargs] = NULL;
    *argv_out = block;
    *argc_out = fill.nargs;
    return SG_OK;
}
