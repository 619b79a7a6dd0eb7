/* Fluentd's buffer files, as weir adopts them (see adopt_fluentd in buffer.c): the chunk file
 * names buffer.<b|q><32 hex>.log and their .meta siblings. Internal to src/buffer/ (and the
 * fuzz target that feeds .meta files from a foreign volume to the parser). */
#ifndef WEIR_FLUENTD_META_H
#define WEIR_FLUENTD_META_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chunkfile.h"

#define FLUENTD_META_MAX (1024 * 1024) /* a .meta is a few hundred bytes */

/* True when `name` is buffer.<b|q><32 lowercase hex><suffix>: weir names its chunk files
 * (".chunk") as Fluentd names its own (".log"). hex receives the id, *state (may be NULL) the
 * 'b' (staged) or 'q' (queued). */
bool buffer_file_name_parse(const char *name, const char *suffix, char *state, char hex[33]);
/* buffer_file_name_parse for a Fluentd chunk: buffer.<b|q><32 lowercase hex>.log. */
bool fluentd_name_parse(const char *name, char hex[33]);

/* Parses the bytes of a .meta: C1 00, a u32 length, a msgpack map (or, legacy, the whole
 * buffer is the map). Fills timekey, tag, variables and id into m, and the record count into
 * *records when the map has one. Returns 0, or -1 when the bytes are not a .meta with an id. */
int fluentd_meta_parse(const char *data, size_t len, chunk_meta_t *m, uint64_t *records);

/* Reads the .meta at path (its first FLUENTD_META_MAX bytes) and parses it. */
int fluentd_meta_read(const char *path, chunk_meta_t *m, uint64_t *records);

#endif
