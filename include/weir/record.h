/* Reading fields of a record (a msgpack map, see event.h) as Fluentd's filters name them.
 *
 * A key is either a top-level field name, taken as written ("a.b" is the field "a.b"), or
 * Fluentd's record_accessor syntax: "$.a.b", "$['a']['b']", "$.a[0]" or mixed, where [N]
 * indexes an array (negative N from its end, as Ruby's dig). Lookups read only the bytes of the
 * record, allocate nothing and cost one pass over each map on the path. When a map holds a key
 * twice, the last one counts, as it does in the Hash Fluentd unpacks. */
#ifndef WEIR_RECORD_H
#define WEIR_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "weir/common.h"

/* Longest accessor path (elements after "$"); a configuration is trusted, but a path is
 * walked per event, so it stays short. */
#define WEIR_RACCESS_MAX_DEPTH 32

typedef struct weir_raccess_part {
    char *key; /* NULL for an array index */
    size_t key_len;
    int64_t index;
} weir_raccess_part_t;

typedef struct weir_raccess {
    weir_raccess_part_t *parts;
    size_t n;
} weir_raccess_t;

/* Parses `spec`; fails with a message naming it on "$" syntax that does not parse. */
int weir_raccess_init(weir_raccess_t *ra, const char *spec, weir_err_t *err);
void weir_raccess_free(weir_raccess_t *ra);
/* True when the path is one top-level key (what a plain key also is). */
bool weir_raccess_is_top(const weir_raccess_t *ra);

/* Finds the value at the path in the record at `rec` (`len` bytes, may hold more after it).
 * Returns 1 with the value's msgpack bytes in *val / *vlen, 0 when a step is missing or is not
 * a map / array, -1 when the bytes are not valid msgpack. */
int weir_raccess_get(const weir_raccess_t *ra, const char *rec, size_t len, const char **val,
                     size_t *vlen);

/* The same for one top-level key. */
int weir_record_get(const char *rec, size_t len, const char *key, size_t key_len, const char **val,
                    size_t *vlen);

#endif
