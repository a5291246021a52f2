/* argv_split.h - turns a raw command line into argv with shell quoting rules and nothing else. */
#ifndef SOCKGATE_EXEC_ARGV_SPLIT_H
#define SOCKGATE_EXEC_ARGV_SPLIT_H

#include <stddef.h>

/* The most arguments one command line may hold. */
#define EXEC_SPLIT_MAX_ARGS 4096u

/*
 * Splits buf[0..len) into words the way a POSIX shell splits a simple
 * command, but with quoting only:
 *   - words are separated by unquoted spaces and tabs;
 *   - '...' keeps every byte inside literally;
 *   - "..." keeps every byte literally except that a backslash before
 *     $ ` " \ drops the backslash, and backslash-newline disappears;
 *   - an unquoted backslash makes the next byte literal, and
 *     backslash-newline disappears;
 *   - '' and "" make an empty word.
 * Nothing else is special: ; | & > < $( ) ` * ? ~ # = and newlines are plain
 * bytes of a word, because no shell ever sees the result.
 *
 * On success returns SG_OK, *argv_out is a new NULL-terminated array (one
 * allocation holding pointers and strings: the caller frees it with a single
 * free()) and *argc_out its length, which may be 0 for a blank line. On bad
 * input (a NUL byte, an unterminated quote, a trailing backslash, more than
 * EXEC_SPLIT_MAX_ARGS words) returns SG_ERR_INVALID and writes why into err;
 * SG_ERR_NOMEM when memory runs out. Pure: no globals, no I/O.
 */
int exec_argv_split(const char *buf, size_t len, char ***argv_out, size_t *argc_out, char *err,
                    size_t errlen);

#endif
