/* text.h - small text helpers shared by services: UTF-8 checks and hex. */
#ifndef SOCKGATE_TEXT_H
#define SOCKGATE_TEXT_H

#include <stddef.h>
#include <stdint.h>

/* Returns 1 when buf[0..len) is valid UTF-8 (no overlongs, no surrogates), else 0. */
int sg_utf8_valid(const void *buf, size_t len);

/* Writes the lower-case hex of bin[0..len) and a NUL into hex (2*len+1 bytes). */
void sg_hex_encode(const uint8_t *bin, size_t len, char *hex);

#endif
