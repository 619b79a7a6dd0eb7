/* The process's own gauges, under the names every Prometheus client library uses
 * (process_start_time_seconds, process_resident_memory_bytes, process_open_fds,
 * process_max_fds), so dashboards written for other daemons work on weir unchanged.
 *
 * Each is read from /proc when scraped (a few small reads per scrape, nothing in between). Where
 * /proc cannot be read the gauge returns NAN and its sample is left out, rather than a made-up
 * 0. The start time is the kernel's (boot time plus the process's start in clock ticks), so a
 * configuration reload, which builds a new registry owner, does not reset it. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "weir/metrics.h"

/* Field 22 of /proc/self/stat (starttime, clock ticks after boot). The command name (field 2)
 * is in parentheses and may hold spaces, so counting starts after its last ')'. */
static double start_ticks(void)
{
    char buf[1024];
    FILE *f = fopen("/proc/self/stat", "r");
    if (!f) return NAN;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (!p) return NAN;
    /* after ") " comes field 3; starttime is 19 fields further */
    p++;
    for (int field = 3; field <= 22; field++) {
        while (*p == ' ')
            p++;
        if (!*p) return NAN;
        if (field == 22) return strtod(p, NULL);
        while (*p && *p != ' ')
            p++;
    }
    return NAN;
}

static double boot_time(void)
{
    char line[256];
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return NAN;
    double bt = NAN;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "btime ", 6) == 0) {
            bt = strtod(line + 6, NULL);
            break;
        }
    fclose(f);
    return bt;
}

/* The kernel's start time of this process: read once (it never changes, and /proc/stat is
 * large on a many-core host), kept for every scrape after. */
static double start_time(void)
{
    long hz = sysconf(_SC_CLK_TCK);
    double ticks = start_ticks(), bt = boot_time();
    if (hz <= 0 || isnan(ticks) || isnan(bt)) return NAN;
    return bt + ticks / (double)hz;
}

static double g_start_time(void *arg)
{
    return *(const double *)arg;
}

static double g_resident(void *arg)
{
    (void)arg;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return NAN;
    unsigned long size = 0, resident = 0;
    int got = fscanf(f, "%lu %lu", &size, &resident);
    fclose(f);
    long page = sysconf(_SC_PAGESIZE);
    return got == 2 && page > 0 ? (double)resident * (double)page : NAN;
}

static double g_open_fds(void *arg)
{
    (void)arg;
    DIR *d = opendir("/proc/self/fd");
    if (!d) return NAN;
    double n = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n - 1; /* the directory being read is itself an open descriptor */
}

static double g_max_fds(void *arg)
{
    (void)arg;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) return NAN;
    return (double)rl.rlim_cur;
}

void weir_metrics_process(weir_metrics_t *m, const void *owner)
{
    static double started; /* the process's, so the same across reloads */
    if (started == 0) started = start_time();
    const struct {
        const char *name, *help;
        weir_gauge_fn fn;
        void *arg;
    } gauges[] = {
        {"process_start_time_seconds", "Start time of the process since the Unix epoch, seconds.",
         g_start_time, &started},
        {"process_resident_memory_bytes", "Resident memory size, bytes.", g_resident, NULL},
        {"process_open_fds", "Open file descriptors.", g_open_fds, NULL},
        {"process_max_fds", "Limit on open file descriptors (RLIMIT_NOFILE, soft).", g_max_fds,
         NULL},
    };
    for (size_t i = 0; i < sizeof gauges / sizeof gauges[0]; i++)
        weir_metrics_gauge_fn(m, owner, gauges[i].name, gauges[i].help, NULL, gauges[i].fn,
                              gauges[i].arg);
}
