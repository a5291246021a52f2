/* name.h - which file names the file service accepts: a pure check, shared with the gateway and fuzzers. */
#ifndef SOCKGATE_FILE_NAME_H
#define SOCKGATE_FILE_NAME_H

#include <stddef.h>

/* The longest name in bytes: one directory entry (NAME_MAX) on every common Linux filesystem. */
#define FILE_NAME_MAX 255

/*
 * Checks name[0..len) (len counts every byte, so an embedded NUL is seen).
 * Returns SG_OK for a name the service stores as one flat directory entry,
 * else SG_ERR_INVALID_NAME with a one-sentence reason copied into why (which
 * may be NULL). A name is refused when it is empty, over FILE_NAME_MAX bytes,
 * starts with '.' (so ".", "..", and every temporary or metadata entry of the
 * store), holds '/', '\\', NUL or a control character (C0, DEL, C1), or is
 * not valid UTF-8. Pure: no I/O, no allocation, safe from any thread.
 */
int file_name_check(const char *name, size_t len, char *why, size_t whylen);

#endif
