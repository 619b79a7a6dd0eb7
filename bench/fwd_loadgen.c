/* fwd_loadgen: a forward-protocol load generator.
 *
 * Opens N connections to a forward input and sends PackedForward frames of E events of about
 * R bytes each (EventTime entries, str32 payload as Fluentd's out_forward sends), optionally
 * gzip-compressed, optionally with an ack request per frame (then it waits for each ack before
 * sending the next frame on that connection, as real senders do). Prints events/s and, given
 * the receiver's pid, the receiver's peak RSS (VmHWM).
 *
 *   fwd_loadgen -p 24224 -c 4 -e 1000 -r 200 -s 10 [-a] [-z] [-T] [-U] [--pid PID]
 */
#include <arpa/inet.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

typedef struct opts {
    const char *host;
    int port;
    int conns;
    int events;
    int record_size;
    double seconds;
    int ack;
    int gzip;
    long pid;
    int restamp; /* give every frame the current time (uncompressed frames only) */
    int unique;  /* give every event a seq of its own (uncompressed frames only) */
} opts_t;

#define MAX_SAMPLES (1u << 20) /* ack latencies kept per connection */

typedef struct worker {
    pthread_t th;
    const opts_t *o;
    unsigned char *frame; /* this connection's own copy when restamping */
    size_t frame_len;
    unsigned long long frames;
    int error;
    double *lat; /* seconds from the frame's first byte sent to its ack read */
    size_t nlat;
} worker_t;

static volatile int stop_flag;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* One entry: [EventTime, {"message": "<pad>", "seq": i, "host": "bench"}], about `size` bytes. */
static size_t build_entry(unsigned char *p, int i, int size)
{
    unsigned char *s = p;
    *p++ = 0x92;
    *p++ = 0xd7;
    *p++ = 0x00;
    put32(p, (uint32_t)time(NULL));
    put32(p + 4, (uint32_t)i * 1000u);
    p += 8;
    *p++ = 0x83;
    memcpy(p,
           "\xa4host\xa5"
           "bench",
           11);
    p += 11;
    memcpy(p, "\xa3seq\xce", 5);
    p += 5;
    put32(p, (uint32_t)i);
    p += 4;
    int pad = size - 45;
    if (pad < 1) pad = 1;
    memcpy(p, "\xa7message\xda", 9);
    p += 9;
    p[0] = (unsigned char)(pad >> 8);
    p[1] = (unsigned char)pad;
    p += 2;
    for (int k = 0; k < pad; k++)
        p[k] = (unsigned char)('a' + (i + k) % 26);
    p += pad;
    return (size_t)(p - s);
}

static unsigned char *build_frame(const opts_t *o, size_t *len)
{
    size_t cap = (size_t)o->events * ((size_t)o->record_size + 64) + 256;
    unsigned char *entries = malloc(cap);
    size_t elen = 0;
    for (int i = 0; i < o->events; i++)
        elen += build_entry(entries + elen, i, o->record_size);
    if (o->gzip) {
        z_stream z = {0};
        deflateInit2(&z, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
        size_t zcap = deflateBound(&z, elen);
        unsigned char *zb = malloc(zcap);
        z.next_in = entries;
        z.avail_in = (uInt)elen;
        z.next_out = zb;
        z.avail_out = (uInt)zcap;
        deflate(&z, Z_FINISH);
        elen = z.total_out;
        deflateEnd(&z);
        free(entries);
        entries = zb;
    }
    unsigned char *f = malloc(elen + 128);
    unsigned char *p = f;
    *p++ = 0x93;
    memcpy(p,
           "\xa5"
           "bench",
           6);
    p += 6;
    *p++ = 0xdb;
    put32(p, (uint32_t)elen);
    p += 4;
    memcpy(p, entries, elen);
    p += elen;
    free(entries);
    int nopt = 2 + (o->ack ? 1 : 0);
    *p++ = (unsigned char)(0x80 | nopt);
    memcpy(p, "\xa4size\xce", 6);
    p += 6;
    put32(p, (uint32_t)o->events);
    p += 4;
    memcpy(p,
           "\xaa"
           "compressed",
           11);
    p += 11;
    if (o->gzip) {
        memcpy(p, "\xa4gzip", 5);
        p += 5;
    } else {
        memcpy(p, "\xa4text", 5);
        p += 5;
    }
    if (o->ack) {
        memcpy(p,
               "\xa5"
               "chunk\xb8",
               7);
        p += 7;
        memcpy(p, "p8n9gmxTQVC8/nh2wlKKeQ==", 24);
        p += 24;
    }
    *len = (size_t)(p - f);
    return f;
}

static int connect_to(const opts_t *o)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)o->port)};
    inet_pton(AF_INET, o->host, &a.sin_addr);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        perror("connect");
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static int send_all(int fd, const unsigned char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Writes the current time into every entry of an uncompressed frame: each entry starts with
 * 92 d7 00 and the payload holds nothing else that does, given how build_entry writes it. */
static void restamp(unsigned char *f, size_t len)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    for (size_t i = 0; i + 11 <= len; i++) {
        if (f[i] == 0x92 && f[i + 1] == 0xd7 && f[i + 2] == 0x00) {
            put32(f + i + 3, (uint32_t)ts.tv_sec);
            put32(f + i + 7, (uint32_t)ts.tv_nsec);
            i += 10;
        }
    }
}

/* Numbers every entry of an uncompressed frame from a counter shared by all connections, so
 * that no two events carry one seq (the dedupe filter's benchmark keys on it): the key
 * "seq" as build_entry writes it (a3 's' 'e' 'q' ce) occurs nowhere else. */
static _Atomic uint32_t next_seq;
static void renumber(unsigned char *f, size_t len)
{
    for (size_t i = 0; i + 9 <= len; i++) {
        if (memcmp(f + i, "\xa3seq\xce", 5) == 0) {
            put32(f + i + 5, atomic_fetch_add(&next_seq, 1));
            i += 8;
        }
    }
}

static void *worker_run(void *arg)
{
    worker_t *w = arg;
    int fd = connect_to(w->o);
    if (fd < 0) {
        w->error = 1;
        return NULL;
    }
    static const unsigned char want[] = "\x81\xa3"
                                        "ack\xb8"
                                        "p8n9gmxTQVC8/nh2wlKKeQ==";
    unsigned char ack[64];
    while (!stop_flag) {
        double t0 = now_s();
        if (w->o->restamp) restamp(w->frame, w->frame_len);
        if (w->o->unique) renumber(w->frame, w->frame_len);
        if (send_all(fd, w->frame, w->frame_len) != 0) {
            w->error = 1;
            break;
        }
        if (w->o->ack) {
            size_t got = 0;
            while (got < sizeof want - 1) {
                ssize_t r = recv(fd, ack + got, sizeof want - 1 - got, 0);
                if (r <= 0) {
                    w->error = 1;
                    goto out;
                }
                got += (size_t)r;
            }
            if (memcmp(ack, want, sizeof want - 1) != 0) {
                fprintf(stderr, "unexpected ack bytes\n");
                w->error = 1;
                break;
            }
            if (w->nlat < MAX_SAMPLES) w->lat[w->nlat++] = now_s() - t0;
        }
        w->frames++;
    }
out:
    close(fd);
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static long peak_rss_kb(long pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%ld/status", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %ld kB", &kb) == 1) break;
    fclose(f);
    return kb;
}

int main(int argc, char **argv)
{
    opts_t o = {"127.0.0.1", 24224, 4, 1000, 200, 10, 0, 0, 0, 0, 0};
    static const struct option lo[] = {{"pid", required_argument, NULL, 'P'}, {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "h:p:c:e:r:s:azTU", lo, NULL)) != -1) {
        switch (c) {
        case 'h':
            o.host = optarg;
            break;
        case 'p':
            o.port = atoi(optarg);
            break;
        case 'c':
            o.conns = atoi(optarg);
            break;
        case 'e':
            o.events = atoi(optarg);
            break;
        case 'r':
            o.record_size = atoi(optarg);
            break;
        case 's':
            o.seconds = atof(optarg);
            break;
        case 'a':
            o.ack = 1;
            break;
        case 'z':
            o.gzip = 1;
            break;
        case 'T':
            o.restamp = 1;
            break;
        case 'U':
            o.unique = 1;
            break;
        case 'P':
            o.pid = atol(optarg);
            break;
        default:
            fprintf(stderr, "usage: fwd_loadgen [-h host] [-p port] [-c conns] [-e events/frame] "
                            "[-r record bytes] [-s seconds] [-a ack] [-z gzip] [-T current time "
                            "in every frame] [-U a seq of its own for every event] [--pid PID]\n");
            return 2;
        }
    }
    size_t flen;
    unsigned char *frame = build_frame(&o, &flen);
    worker_t *ws = calloc((size_t)o.conns, sizeof *ws);
    double t0 = now_s();
    for (int i = 0; i < o.conns; i++) {
        ws[i].o = &o;
        ws[i].frame = malloc(flen);
        memcpy(ws[i].frame, frame, flen);
        ws[i].frame_len = flen;
        ws[i].lat = malloc(MAX_SAMPLES * sizeof(double));
        pthread_create(&ws[i].th, NULL, worker_run, &ws[i]);
    }
    usleep((useconds_t)(o.seconds * 1e6));
    stop_flag = 1;
    unsigned long long frames = 0;
    int errors = 0;
    for (int i = 0; i < o.conns; i++) {
        pthread_join(ws[i].th, NULL);
        frames += ws[i].frames;
        errors += ws[i].error;
    }
    double dt = now_s() - t0;
    double eps = (double)frames * o.events / dt;
    printf("conns=%d events/frame=%d record~%dB ack=%s gzip=%s frame=%zuB\n", o.conns, o.events,
           o.record_size, o.ack ? "on" : "off", o.gzip ? "on" : "off", flen);
    printf("events=%llu seconds=%.2f events/s=%.0f MB/s(wire)=%.1f errors=%d\n",
           frames * (unsigned long long)o.events, dt, eps, (double)frames * flen / dt / 1e6,
           errors);
    if (o.ack) {
        size_t n = 0;
        for (int i = 0; i < o.conns; i++)
            n += ws[i].nlat;
        double *all = malloc((n ? n : 1) * sizeof(double));
        size_t k = 0;
        for (int i = 0; i < o.conns; i++)
            for (size_t j = 0; j < ws[i].nlat; j++)
                all[k++] = ws[i].lat[j];
        qsort(all, n, sizeof(double), cmp_double);
        if (n)
            printf("ack latency per frame: p50=%.2f ms p99=%.2f ms max=%.2f ms (%zu frames)\n",
                   all[n / 2] * 1e3, all[(size_t)(n * 0.99)] * 1e3, all[n - 1] * 1e3, n);
        free(all);
    }
    if (o.pid) printf("receiver peak RSS=%.1f MB\n", peak_rss_kb(o.pid) / 1024.0);
    for (int i = 0; i < o.conns; i++)
        free(ws[i].lat);
    free(ws);
    free(frame);
    return errors ? 1 : 0;
}
