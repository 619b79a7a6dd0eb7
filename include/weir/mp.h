/* A minimal, allocation-free msgpack reader over a byte range.
 *
 * weir reads untrusted msgpack without msgpack-c's unpacker, because that allocates room for a
 * container's declared element count before the elements exist. These functions only look at
 * bytes that are present, never allocate, and bound nesting depth with an explicit stack. */
#ifndef WEIR_MP_H
#define WEIR_MP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef enum weir_mp_type {
    WEIR_MP_NIL,
    WEIR_MP_BOOL,
    WEIR_MP_UINT,  /* non-negative integer, in v.u */
    WEIR_MP_INT,   /* negative integer, in v.i */
    WEIR_MP_FLOAT, /* float32 or float64, in v.f */
    WEIR_MP_STR,
    WEIR_MP_BIN,
    WEIR_MP_ARRAY, /* v.n elements follow */
    WEIR_MP_MAP,   /* v.n key/value pairs follow */
    WEIR_MP_EXT,
} weir_mp_type_t;

typedef struct weir_mp_obj {
    weir_mp_type_t type;
    union {
        bool b;
        uint64_t u;
        int64_t i;
        double f;
        uint32_t n;
    } v;
    const char *ptr; /* payload of str/bin/ext */
    uint32_t len;    /* payload length of str/bin/ext */
    int8_t ext_type;
    bool is_f32; /* FLOAT read from a float32 */
} weir_mp_obj_t;

#define WEIR_MP_INCOMPLETE 0
#define WEIR_MP_INVALID (-1)
#define WEIR_MP_TOO_DEEP (-2)

/* Reads one object header (and the payload of str/bin/ext) at p. Returns the bytes consumed,
 * WEIR_MP_INCOMPLETE if more bytes are needed, WEIR_MP_INVALID for the reserved byte 0xc1. */
ssize_t weir_mp_read(const char *p, size_t avail, weir_mp_obj_t *o);

/* Skips one whole value at p, nesting at most `max_depth` containers. Returns its length,
 * WEIR_MP_INCOMPLETE, WEIR_MP_INVALID or WEIR_MP_TOO_DEEP. Linear in the value's size. */
ssize_t weir_mp_skip(const char *p, size_t avail, int max_depth);

/* Largest depth weir_mp_skip supports (its stack is on the C stack). */
#define WEIR_MP_MAX_DEPTH 128

#endif
