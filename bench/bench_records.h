/* The records the benchmarks run on: Teleport-like audit events of about 200 bytes of msgpack
 * (strings, integers, a boolean, a nested map), shared by bench_format and bench_filters so
 * their figures are for the same events. Header-only: each bench/ file is its own program. */
#ifndef WEIR_BENCH_RECORDS_H
#define WEIR_BENCH_RECORDS_H

#include <msgpack.h>
#include <stdio.h>
#include <string.h>

#include "weir/event.h"

static inline void pack_str(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str_with_body(pk, s, strlen(s));
}

/* One teleport-like audit event; `i` varies ids, numbers and lengths. */
static inline void build_record(msgpack_packer *pk, int i)
{
    char uid[40], user[24], addr[32];
    snprintf(uid, sizeof uid, "%08x-4b1c-4d2e-9f3a-%012x", 0x1234567u * (unsigned)i, i * 7919u);
    snprintf(user, sizeof user, "user%d@example.com", i % 97);
    snprintf(addr, sizeof addr, "10.%d.%d.%d:%d", i % 250, (i / 7) % 250, i % 13, 40000 + i);
    msgpack_pack_map(pk, 9);
    pack_str(pk, "event");
    pack_str(pk, i % 3 ? "session.start" : "user.login");
    pack_str(pk, "uid");
    pack_str(pk, uid);
    pack_str(pk, "code");
    pack_str(pk, "T2000I");
    pack_str(pk, "user");
    pack_str(pk, user);
    pack_str(pk, "success");
    msgpack_pack_true(pk);
    pack_str(pk, "ei");
    msgpack_pack_int(pk, i * 31);
    pack_str(pk, "cluster_name");
    pack_str(pk, "teleport.example.com");
    pack_str(pk, "addr.remote");
    pack_str(pk, addr);
    pack_str(pk, "meta");
    msgpack_pack_map(pk, 2);
    pack_str(pk, "kind");
    pack_str(pk, "node");
    pack_str(pk, "attempt");
    msgpack_pack_int(pk, i % 5);
}

/* A batch tagged teleport.audit of n such events, a few sharing each second as in a busy
 * stream. */
static inline void bench_audit_batch(weir_batch_t *b, int n)
{
    weir_batch_init(b, "teleport.audit", strlen("teleport.audit"));
    weir_buf_t rec;
    weir_buf_init(&rec);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &rec, weir_buf_msgpack_write);
    weir_time_t t = {1715288440, 632000000};
    for (int i = 0; i < n; i++) {
        rec.len = 0;
        build_record(&pk, i);
        weir_time_t ti = {t.sec + (uint32_t)(i / 50), t.nsec + (uint32_t)i * 1000};
        weir_batch_append(b, ti, rec.data, rec.len);
    }
    weir_buf_free(&rec);
}

#endif
