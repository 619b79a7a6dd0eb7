/* libweir_powerloss.so: an LD_PRELOAD interposer that makes a SIGKILL look like a power loss.
 *
 * A killed process loses nothing that reached the page cache, so kill -9 alone cannot show
 * a missing fsync. This library records, before every change a process makes under the
 * watched directories, how to undo it, in an undo log outside them; after the process is
 * killed, replay.py undoes every change that was not made durable, leaving the files as a
 * power loss at that moment could have left them (the worst case of the model below).
 *
 * The model (test/powerloss/README.md says more, and what it does not cover):
 *  - a file's data (writes, truncations, O_TRUNC) is durable once an fsync or fdatasync of
 *    that inode (through any descriptor) has returned; only what was logged before the sync
 *    began counts, so a write racing a sync in another thread is not covered by it;
 *  - a directory entry (a create, link, mkdir, unlink, rmdir, or either side of a rename) is
 *    durable once an fsync of the directory that holds it has returned; a rename of a file is
 *    two changes, the name removed from the old directory and added to the new one, each
 *    durable with its own directory; a rename of a directory is undone whole, unless both
 *    directories were synced;
 *  - sync() and syncfs() make everything durable; an fd opened O_SYNC/O_DSYNC (or a
 *    pwritev2 with RWF_SYNC/RWF_DSYNC) makes its own writes durable as they return.
 * A sync covers a prefix of the log, so what it makes durable per inode or directory is
 * always a prefix: the replay undoes, newest first, a suffix of each inode's data records
 * and of each directory's entry records, and never has to undo something a later, durable
 * record depends on.
 *
 * Files are named by inode, not by path: at the first change to a regular file its inode
 * gets a hard link in the stash directory (same file system, outside the watched ones), so
 * its data can be restored whatever names it has by then, an unlinked file can be linked
 * back, and no inode number is reused while the log lives.
 *
 * The log: one record per change, each a text line of nine fields and an optional binary
 * payload, appended with one write on an O_APPEND descriptor, so a record is in the page
 * cache before the change it describes starts and survives the SIGKILL (a torn last record
 * describes a change that never started). A record's position is its byte offset in the log.
 *   D pos dev ino off oldsize  0 n 0        data: bytes [off, off+n) were <payload>, size was
 *                                           oldsize (a write, a truncation, an O_TRUNC)
 *   A pos ddev dino ino isdir  0 nname npath  entry <name> added to directory <path>
 *                                           (ino 0: whatever the create makes)
 *   R pos ddev dino ino isdir  0 nname npath  entry <name> (inode ino) removed
 *   M pos dev odino ndino ino  0 nold nnew  a directory renamed from odir/<old> to ndir/<new>
 *   F pos dev ino upto 0       0 0 0        fsync of an inode returned; covers records < upto
 *   S pos 0 0 upto 0           0 0 0        sync(): covers every record < upto
 * (the seventh field is always 0: every line has nine fields, so parsing is one split.)
 *
 * Calls covered, each under its glibc names (the 64-bit aliases and the _FORTIFY_SOURCE
 * variants included): open, openat, creat, write, pwrite, writev, pwritev, pwritev2,
 * ftruncate, truncate, rename, renameat, renameat2, unlink, unlinkat, rmdir, link, linkat,
 * symlink, symlinkat, mkdir, mkdirat, fsync, fdatasync, sync, syncfs. Calls the model cannot
 * follow on a watched file abort the process with a message naming them, rather than let a
 * test pass unseen: fopen/freopen/fdopen for writing (stdio's writes do not go through the
 * PLT), shared writable mmap, fallocate, copy_file_range, sendfile, splice, O_TMPFILE and
 * RENAME_EXCHANGE. sync_file_range needs nothing: it makes nothing durable.
 *
 * Environment: WEIR_POWERLOSS_LOG (the undo log; unset = the library does nothing),
 * WEIR_POWERLOSS_DIRS (watched directories, ':'-separated), WEIR_POWERLOSS_STASH (the stash
 * directory), and optionally WEIR_POWERLOSS_CRASH_AT=op:substring:n, which SIGKILLs the
 * process just before the n-th `op` (open, rename or unlink, rmdir included) on a watched
 * path containing `substring`, for crashes at an exact point.
 *
 * Invariant: every change under a watched directory is preceded in the log by its record;
 * all of them, and the inode set, are serialised by one mutex, so the log's order is the
 * order in which the changes happened. The mutex is never held across an fsync. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#define PL_MAX_ROOTS 16     /* watched directories */
#define PL_COPY_PIECE 65536 /* bytes read at a time when saving old contents */
#define PL_SET_INITIAL 1024 /* slots of the stashed-inode set; doubled as it fills */
#define PL_ENV_LOG "WEIR_POWERLOSS_LOG"
#define PL_ENV_DIRS "WEIR_POWERLOSS_DIRS"
#define PL_ENV_STASH "WEIR_POWERLOSS_STASH"
#define PL_ENV_CRASH "WEIR_POWERLOSS_CRASH_AT"

/* ---- the real functions ------------------------------------------------------------------ */

#define REAL(name, ret, args)                                                                      \
    static ret(*real_##name) args;                                                                 \
    static ret(*get_##name(void)) args                                                             \
    {                                                                                              \
        if (!real_##name) real_##name = (ret(*) args)dlsym(RTLD_NEXT, #name);                      \
        return real_##name;                                                                        \
    }

REAL(openat, int, (int, const char *, int, ...))
REAL(write, ssize_t, (int, const void *, size_t))
REAL(pwrite, ssize_t, (int, const void *, size_t, off_t))
REAL(writev, ssize_t, (int, const struct iovec *, int))
REAL(pwritev, ssize_t, (int, const struct iovec *, int, off_t))
REAL(pwritev2, ssize_t, (int, const struct iovec *, int, off_t, int))
REAL(ftruncate, int, (int, off_t))
REAL(truncate, int, (const char *, off_t))
REAL(renameat2, int, (int, const char *, int, const char *, unsigned int))
REAL(renameat, int, (int, const char *, int, const char *))
REAL(unlinkat, int, (int, const char *, int))
REAL(linkat, int, (int, const char *, int, const char *, int))
REAL(symlinkat, int, (const char *, int, const char *))
REAL(mkdirat, int, (int, const char *, mode_t))
REAL(fsync, int, (int))
REAL(fdatasync, int, (int))
REAL(sync, void, (void))
REAL(syncfs, int, (int))
REAL(fopen, FILE *, (const char *, const char *))
REAL(fopen64, FILE *, (const char *, const char *))
REAL(freopen, FILE *, (const char *, const char *, FILE *))
REAL(freopen64, FILE *, (const char *, const char *, FILE *))
REAL(fdopen, FILE *, (int, const char *))
REAL(mmap, void *, (void *, size_t, int, int, int, off_t))
REAL(mmap64, void *, (void *, size_t, int, int, int, off_t))
REAL(fallocate, int, (int, int, off_t, off_t))
REAL(fallocate64, int, (int, int, off_t, off_t))
REAL(posix_fallocate, int, (int, off_t, off_t))
REAL(posix_fallocate64, int, (int, off_t, off_t))
REAL(copy_file_range, ssize_t, (int, off_t *, int, off_t *, size_t, unsigned int))
REAL(sendfile, ssize_t, (int, int, off_t *, size_t))
REAL(sendfile64, ssize_t, (int, int, off_t *, size_t))
REAL(splice, ssize_t, (int, off_t *, int, off_t *, size_t, unsigned int))

/* ---- state ------------------------------------------------------------------------------- */

typedef struct inode_key {
    dev_t dev;
    ino_t ino;
} inode_key_t;

static pthread_once_t pl_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t pl_mu = PTHREAD_MUTEX_INITIALIZER;
static int pl_log = -1; /* -1: inactive, every call passes through */
static char pl_stash[PATH_MAX];
static char pl_roots[PL_MAX_ROOTS][PATH_MAX];
static size_t pl_nroots;
static char pl_crash_op[32], pl_crash_sub[PATH_MAX];
static long pl_crash_n;
static inode_key_t *pl_set; /* open addressing; ino 0 = free slot */
static size_t pl_set_cap, pl_set_n;

static void pl_die(const char *what, const char *detail)
{
    char msg[PATH_MAX + 256];
    int n = snprintf(msg, sizeof msg,
                     "weir_powerloss: %s%s%s; the power-loss model cannot follow "
                     "this, stopping the process\n",
                     what, detail ? ": " : "", detail ? detail : "");
    if (n > 0) (void)!get_write()(2, msg, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1);
    abort();
}

static void pl_init(void)
{
    const char *log = getenv(PL_ENV_LOG), *dirs = getenv(PL_ENV_DIRS),
               *stash = getenv(PL_ENV_STASH), *crash = getenv(PL_ENV_CRASH);
    if (!log || !*log) return;
    if (!dirs || !stash) pl_die("WEIR_POWERLOSS_DIRS and WEIR_POWERLOSS_STASH must be set", NULL);
    if (!realpath(stash, pl_stash)) pl_die("cannot resolve the stash directory", stash);
    char *copy = strdup(dirs), *save = NULL;
    for (char *tok = strtok_r(copy, ":", &save); tok; tok = strtok_r(NULL, ":", &save)) {
        if (pl_nroots == PL_MAX_ROOTS) pl_die("too many watched directories", dirs);
        /* a root that does not exist yet (weir creates it) is taken as written */
        if (!realpath(tok, pl_roots[pl_nroots])) snprintf(pl_roots[pl_nroots], PATH_MAX, "%s", tok);
        pl_nroots++;
    }
    free(copy);
    if (crash && *crash) {
        char sub[PATH_MAX];
        if (sscanf(crash, "%31[^:]:%4095[^:]:%ld", pl_crash_op, sub, &pl_crash_n) != 3)
            pl_die("WEIR_POWERLOSS_CRASH_AT is not op:substring:n", crash);
        snprintf(pl_crash_sub, sizeof pl_crash_sub, "%s", sub);
    }
    pl_log = get_openat()(AT_FDCWD, log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (pl_log < 0) pl_die("cannot open the undo log", log);
}

static bool pl_active(void)
{
    pthread_once(&pl_once, pl_init);
    return pl_log >= 0;
}

static void pl_crash_point(const char *op, const char *path)
{
    if (!pl_crash_n || strcmp(op, pl_crash_op) != 0 || !path || !strstr(path, pl_crash_sub)) return;
    if (--pl_crash_n == 0) raise(SIGKILL);
}

/* ---- the stashed-inode set ---------------------------------------------------------------- */

static size_t pl_slot(inode_key_t *tab, size_t cap, dev_t dev, ino_t ino)
{
    size_t h = ((size_t)ino * 0x9E3779B97F4A7C15ull ^ (size_t)dev) & (cap - 1);
    while (tab[h].ino && !(tab[h].ino == ino && tab[h].dev == dev))
        h = (h + 1) & (cap - 1);
    return h;
}

static bool pl_set_has(dev_t dev, ino_t ino)
{
    return pl_set && pl_set[pl_slot(pl_set, pl_set_cap, dev, ino)].ino == ino;
}

static void pl_set_add(dev_t dev, ino_t ino)
{
    if ((pl_set_n + 1) * 2 > pl_set_cap) {
        size_t cap = pl_set_cap ? pl_set_cap * 2 : PL_SET_INITIAL;
        inode_key_t *tab = calloc(cap, sizeof *tab);
        if (!tab) pl_die("out of memory", NULL);
        for (size_t i = 0; i < pl_set_cap; i++)
            if (pl_set[i].ino) tab[pl_slot(tab, cap, pl_set[i].dev, pl_set[i].ino)] = pl_set[i];
        free(pl_set);
        pl_set = tab;
        pl_set_cap = cap;
    }
    size_t h = pl_slot(pl_set, pl_set_cap, dev, ino);
    if (!pl_set[h].ino) pl_set_n++;
    pl_set[h] = (inode_key_t){dev, ino};
}

static void pl_stash_name(char *out, dev_t dev, ino_t ino)
{
    int n = snprintf(out, PATH_MAX, "%.*s/%llu-%llu", PATH_MAX - 64, pl_stash,
                     (unsigned long long)dev, (unsigned long long)ino);
    if (n < 0 || n >= PATH_MAX) pl_die("the stash path is too long", pl_stash);
}

/* Gives the inode at `path` (a regular file or symlink, as `st` says) a name in the stash. */
static void pl_stash_inode(const char *path, const struct stat *st)
{
    if (!S_ISREG(st->st_mode) && !S_ISLNK(st->st_mode)) return;
    if (pl_set_has(st->st_dev, st->st_ino)) return;
    char name[PATH_MAX];
    pl_stash_name(name, st->st_dev, st->st_ino);
    if (get_linkat()(AT_FDCWD, path, AT_FDCWD, name, 0) != 0 && errno != EEXIST)
        pl_die("cannot link a watched file into the stash (same file system?)", path);
    pl_set_add(st->st_dev, st->st_ino);
}

/* ---- paths -------------------------------------------------------------------------------- */

typedef struct pl_path {
    char abs[PATH_MAX];    /* canonical parent + name */
    char parent[PATH_MAX]; /* canonical */
    const char *name;      /* in abs */
    struct stat pst;       /* the parent */
} pl_path_t;

/* Resolves (dirfd, path) to a canonical parent directory and a last component, without
 * following the last component. Returns false when the parent does not exist. */
static bool pl_resolve(int dirfd, const char *path, pl_path_t *p)
{
    char joined[PATH_MAX * 2];
    if (!path || !*path) return false;
    if (path[0] == '/') {
        snprintf(joined, sizeof joined, "%s", path);
    } else {
        char base[PATH_MAX];
        if (dirfd == AT_FDCWD) {
            if (!getcwd(base, sizeof base)) return false;
        } else {
            char proc[64];
            snprintf(proc, sizeof proc, "/proc/self/fd/%d", dirfd);
            ssize_t n = readlink(proc, base, sizeof base - 1);
            if (n < 0) return false;
            base[n] = '\0';
        }
        snprintf(joined, sizeof joined, "%s/%s", base, path);
    }
    size_t len = strlen(joined);
    while (len > 1 && joined[len - 1] == '/')
        joined[--len] = '\0';
    char *slash = strrchr(joined, '/');
    const char *last = slash + 1;
    char parent[PATH_MAX * 2];
    snprintf(parent, sizeof parent, "%.*s", slash == joined ? 1 : (int)(slash - joined), joined);
    if (!realpath(parent, p->parent) || stat(p->parent, &p->pst) != 0) return false;
    if (strcmp(last, ".") == 0 || strcmp(last, "..") == 0 || !*last) return false;
    int n = snprintf(p->abs, sizeof p->abs, "%s/%s", strcmp(p->parent, "/") ? p->parent : "", last);
    if (n < 0 || (size_t)n >= sizeof p->abs) return false;
    p->name = p->abs + strlen(p->abs) - strlen(last);
    return true;
}

static bool pl_watched(const char *abs)
{
    for (size_t i = 0; i < pl_nroots; i++) {
        size_t n = strlen(pl_roots[i]);
        if (strncmp(abs, pl_roots[i], n) == 0 && (abs[n] == '/' || abs[n] == '\0')) return true;
    }
    return false;
}

/* ---- the log ------------------------------------------------------------------------------ */

static off_t pl_log_pos(void)
{
    struct stat st;
    if (fstat(pl_log, &st) != 0) pl_die("cannot stat the undo log", NULL);
    return st.st_size;
}

/* Appends one record: the line, then the two payload parts. Caller holds the mutex. */
static void pl_record(char type, unsigned long long a, unsigned long long b, unsigned long long c,
                      unsigned long long d, const void *p1, size_t n1, const void *p2, size_t n2)
{
    char line[256];
    int n = snprintf(line, sizeof line, "%c %lld %llu %llu %llu %llu 0 %zu %zu\n", type,
                     (long long)pl_log_pos(), a, b, c, d, n1, n2);
    struct iovec iov[3] = {{line, (size_t)n}, {(void *)p1, n1}, {(void *)p2, n2}};
    struct iovec *v = iov;
    int cnt = 3;
    while (cnt > 0) {
        ssize_t w = get_writev()(pl_log, v, cnt);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) pl_die("cannot write the undo log", NULL);
        while (cnt > 0 && (size_t)w >= v->iov_len) {
            w -= (ssize_t)v->iov_len;
            v++;
            cnt--;
        }
        if (cnt > 0) {
            v->iov_base = (char *)v->iov_base + w;
            v->iov_len -= (size_t)w;
        }
    }
}

static void pl_record_entry(char type, const pl_path_t *p, ino_t ino, bool isdir)
{
    pl_record(type, (unsigned long long)p->pst.st_dev, (unsigned long long)p->pst.st_ino,
              (unsigned long long)ino, isdir, p->name, strlen(p->name), p->parent,
              strlen(p->parent));
}

/* Records that [off, off+len) of a stashed inode is about to change (len < 0: to the end),
 * saving the bytes now there and the size. */
static void pl_record_data(const struct stat *st, off_t off, off_t len)
{
    off_t end = len < 0 || off + len > st->st_size ? st->st_size : off + len;
    size_t n = end > off ? (size_t)(end - off) : 0;
    char *old = NULL;
    if (n) {
        char name[PATH_MAX];
        pl_stash_name(name, st->st_dev, st->st_ino);
        int fd = get_openat()(AT_FDCWD, name, O_RDONLY | O_CLOEXEC);
        old = malloc(n);
        if (fd < 0 || !old) pl_die("cannot read the old contents of a watched file", name);
        for (size_t got = 0; got < n;) {
            size_t want = n - got < PL_COPY_PIECE ? n - got : PL_COPY_PIECE;
            ssize_t r = pread(fd, old + got, want, off + (off_t)got);
            if (r <= 0) pl_die("cannot read the old contents of a watched file", name);
            got += (size_t)r;
        }
        close(fd);
    }
    pl_record('D', (unsigned long long)st->st_dev, (unsigned long long)st->st_ino,
              (unsigned long long)off, (unsigned long long)st->st_size, old, n, NULL, 0);
    free(old);
}

/* A descriptor's inode when it is a stashed (watched) regular file. Caller holds the mutex. */
static bool pl_fd_watched(int fd, struct stat *st)
{
    return fstat(fd, st) == 0 && S_ISREG(st->st_mode) && pl_set_has(st->st_dev, st->st_ino);
}

/* ---- data --------------------------------------------------------------------------------- */

static size_t iov_total(const struct iovec *iov, int n)
{
    size_t t = 0;
    for (int i = 0; i < n; i++)
        t += iov[i].iov_len;
    return t;
}

static void pl_mark_durable(const struct stat *st, off_t upto)
{
    pl_record('F', (unsigned long long)st->st_dev, (unsigned long long)st->st_ino,
              (unsigned long long)upto, 0, NULL, 0, NULL, 0);
}

typedef enum pl_write_kind { PL_WRITE, PL_PWRITE, PL_WRITEV, PL_PWRITEV, PL_PWRITEV2 } pl_kind_t;

static ssize_t pl_real_write(pl_kind_t kind, int fd, const struct iovec *iov, int n, off_t off,
                             int flags)
{
    switch (kind) {
    case PL_WRITE:
        return get_write()(fd, iov[0].iov_base, iov[0].iov_len);
    case PL_PWRITE:
        return get_pwrite()(fd, iov[0].iov_base, iov[0].iov_len, off);
    case PL_WRITEV:
        return get_writev()(fd, iov, n);
    case PL_PWRITEV:
        return get_pwritev()(fd, iov, n, off);
    default:
        return get_pwritev2()(fd, iov, n, off, flags);
    }
}

/* The one write path. `off` is the position for the p* calls (pwritev2: -1 = the
 * descriptor's position); `flags` are pwritev2's. */
static ssize_t pl_write(pl_kind_t kind, int fd, const struct iovec *iov, int n, off_t off,
                        int flags)
{
    struct stat st;
    if (!pl_active() || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
        return pl_real_write(kind, fd, iov, n, off, flags);
    pthread_mutex_lock(&pl_mu);
    if (!pl_fd_watched(fd, &st)) {
        pthread_mutex_unlock(&pl_mu);
        return pl_real_write(kind, fd, iov, n, off, flags);
    }
    int fl = fcntl(fd, F_GETFL);
    bool positioned = kind == PL_PWRITE || kind == PL_PWRITEV || (kind == PL_PWRITEV2 && off >= 0);
    off_t at = off;
    /* Linux appends even a pwrite on an O_APPEND descriptor */
    if ((fl & O_APPEND) || (flags & RWF_APPEND))
        at = st.st_size;
    else if (!positioned)
        at = lseek(fd, 0, SEEK_CUR);
    pl_record_data(&st, at, (off_t)iov_total(iov, n));
    ssize_t r = pl_real_write(kind, fd, iov, n, off, flags);
    int e = errno;
    if (r > 0 && ((fl & (O_SYNC | O_DSYNC)) || (flags & (RWF_SYNC | RWF_DSYNC))))
        pl_mark_durable(&st, pl_log_pos());
    pthread_mutex_unlock(&pl_mu);
    errno = e;
    return r;
}

ssize_t write(int fd, const void *buf, size_t n)
{
    struct iovec v = {(void *)buf, n};
    return pl_write(PL_WRITE, fd, &v, 1, -1, 0);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
    struct iovec v = {(void *)buf, n};
    return pl_write(PL_PWRITE, fd, &v, 1, off, 0);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off) __attribute__((alias("pwrite")));

ssize_t writev(int fd, const struct iovec *iov, int n)
{
    return pl_write(PL_WRITEV, fd, iov, n, -1, 0);
}

ssize_t pwritev(int fd, const struct iovec *iov, int n, off_t off)
{
    return pl_write(PL_PWRITEV, fd, iov, n, off, 0);
}

ssize_t pwritev64(int fd, const struct iovec *iov, int n, off_t off)
    __attribute__((alias("pwritev")));

ssize_t pwritev2(int fd, const struct iovec *iov, int n, off_t off, int flags)
{
    return pl_write(PL_PWRITEV2, fd, iov, n, off, flags);
}

ssize_t pwritev64v2(int fd, const struct iovec *iov, int n, off_t off, int flags)
    __attribute__((alias("pwritev2")));

int ftruncate(int fd, off_t len)
{
    struct stat st;
    if (!pl_active()) return get_ftruncate()(fd, len);
    pthread_mutex_lock(&pl_mu);
    if (pl_fd_watched(fd, &st) && len >= 0) pl_record_data(&st, len, -1);
    int r = get_ftruncate()(fd, len), e = errno;
    pthread_mutex_unlock(&pl_mu);
    errno = e;
    return r;
}

int ftruncate64(int fd, off_t len) __attribute__((alias("ftruncate")));

int truncate(const char *path, off_t len)
{
    pl_path_t p;
    struct stat st;
    if (!pl_active() || !pl_resolve(AT_FDCWD, path, &p) || !pl_watched(p.abs))
        return get_truncate()(path, len);
    pthread_mutex_lock(&pl_mu);
    if (stat(p.abs, &st) == 0 && S_ISREG(st.st_mode) && len >= 0) {
        pl_stash_inode(p.abs, &st);
        pl_record_data(&st, len, -1);
    }
    int r = get_truncate()(path, len), e = errno;
    pthread_mutex_unlock(&pl_mu);
    errno = e;
    return r;
}

int truncate64(const char *path, off_t len) __attribute__((alias("truncate")));

/* ---- syncs -------------------------------------------------------------------------------- */

static int pl_sync_fd(int fd, bool data_only)
{
    struct stat st;
    if (!pl_active() || fstat(fd, &st) != 0 || !(S_ISREG(st.st_mode) || S_ISDIR(st.st_mode)))
        return data_only ? get_fdatasync()(fd) : get_fsync()(fd);
    pthread_mutex_lock(&pl_mu);
    off_t upto = pl_log_pos(); /* only what was logged before the sync began */
    pthread_mutex_unlock(&pl_mu);
    int r = data_only ? get_fdatasync()(fd) : get_fsync()(fd), e = errno;
    if (r == 0) {
        pthread_mutex_lock(&pl_mu);
        pl_mark_durable(&st, upto);
        pthread_mutex_unlock(&pl_mu);
    }
    errno = e;
    return r;
}

int fsync(int fd)
{
    return pl_sync_fd(fd, false);
}

int fdatasync(int fd)
{
    return pl_sync_fd(fd, true);
}

static void pl_sync_all_after(off_t upto)
{
    pthread_mutex_lock(&pl_mu);
    pl_record('S', 0, 0, (unsigned long long)upto, 0, NULL, 0, NULL, 0);
    pthread_mutex_unlock(&pl_mu);
}

void sync(void)
{
    if (!pl_active()) {
        get_sync()();
        return;
    }
    pthread_mutex_lock(&pl_mu);
    off_t upto = pl_log_pos();
    pthread_mutex_unlock(&pl_mu);
    get_sync()();
    pl_sync_all_after(upto);
}

int syncfs(int fd)
{
    if (!pl_active()) return get_syncfs()(fd);
    pthread_mutex_lock(&pl_mu);
    off_t upto = pl_log_pos();
    pthread_mutex_unlock(&pl_mu);
    int r = get_syncfs()(fd), e = errno;
    if (r == 0) pl_sync_all_after(upto); /* the watched directories share one file system */
    errno = e;
    return r;
}

/* ---- open --------------------------------------------------------------------------------- */

static int pl_openat(int dirfd, const char *path, int flags, mode_t mode)
{
    pl_path_t p;
    if (!pl_active() || !pl_resolve(dirfd, path, &p) || !pl_watched(p.abs))
        return get_openat()(dirfd, path, flags, mode);
    if ((flags & O_TMPFILE) == O_TMPFILE) pl_die("O_TMPFILE in a watched directory", p.abs);
    pthread_mutex_lock(&pl_mu);
    pl_crash_point("open", p.abs);
    struct stat st;
    bool exists = stat(p.abs, &st) == 0;
    bool writes = (flags & O_ACCMODE) != O_RDONLY;
    if (!exists && (flags & O_CREAT)) pl_record_entry('A', &p, 0, false);
    if (exists && S_ISREG(st.st_mode) && (flags & O_TRUNC) && writes) {
        pl_stash_inode(p.abs, &st);
        pl_record_data(&st, 0, -1);
    }
    int fd = get_openat()(dirfd, path, flags, mode), e = errno;
    if (fd >= 0 && (writes || (flags & O_CREAT)) && fstat(fd, &st) == 0) pl_stash_inode(p.abs, &st);
    pthread_mutex_unlock(&pl_mu);
    errno = e;
    return fd;
}

static mode_t va_mode(int flags, va_list ap)
{
    return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE ? (mode_t)va_arg(ap, int) : 0;
}

int open(const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t m = va_mode(flags, ap);
    va_end(ap);
    return pl_openat(AT_FDCWD, path, flags, m);
}

int open64(const char *path, int flags, ...) __attribute__((alias("open")));

int openat(int dirfd, const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t m = va_mode(flags, ap);
    va_end(ap);
    return pl_openat(dirfd, path, flags, m);
}

int openat64(int dirfd, const char *path, int flags, ...) __attribute__((alias("openat")));

int __open_2(const char *path, int flags)
{
    return pl_openat(AT_FDCWD, path, flags, 0);
}

int __open64_2(const char *path, int flags) __attribute__((alias("__open_2")));

int __openat_2(int dirfd, const char *path, int flags)
{
    return pl_openat(dirfd, path, flags, 0);
}

int __openat64_2(int dirfd, const char *path, int flags) __attribute__((alias("__openat_2")));

int creat(const char *path, mode_t mode)
{
    return pl_openat(AT_FDCWD, path, O_WRONLY | O_CREAT | O_TRUNC, mode);
}

int creat64(const char *path, mode_t mode) __attribute__((alias("creat")));

/* ---- names -------------------------------------------------------------------------------- */

static int pl_unlinkat(int dirfd, const char *path, int flags)
{
    pl_path_t p;
    struct stat st;
    if (!pl_active() || !pl_resolve(dirfd, path, &p) || !pl_watched(p.abs))
        return get_unlinkat()(dirfd, path, flags);
    pthread_mutex_lock(&pl_mu);
    pl_crash_point("unlink", p.abs);
    if (lstat(p.abs, &st) == 0) {
        bool isdir = S_ISDIR(st.st_mode);
        if (!isdir) pl_stash_inode(p.abs, &st);
        pl_record_entry('R', &p, st.st_ino, isdir);
    }
    int r = get_unlinkat()(dirfd, path, flags), e = errno;
    pthread_mutex_unlock(&pl_mu);
    errno = e;
    return r;
}

int unlink(const char *path)
{
    return pl_unlinkat(AT_FDCWD, path, 0);
}

int unlinkat(int dirfd, const char *path, int flags)
{
    return pl_unlinkat(dirfd, path, flags);
}

int rmdir(const char *path)
{
    return pl_unlinkat(AT_FDCWD, path, AT_REMOVEDIR);
}

static int pl_rename(int ofd, const char *old, int nfd, const char *new, unsigned flags)
{
    pl_path_t o, n;
    if (!pl_active() || !pl_resolve(ofd, old, &o) || !pl_resolve(nfd, new, &n) ||
        (!pl_watched(o.abs) && !pl_watched(n.abs)))
        goto pass;
    if (flags & RENAME_EXCHANGE) pl_die("renameat2 RENAME_EXCHANGE on a watched path", o.abs);
    pthread_mutex_lock(&pl_mu);
    pl_crash_point("rename", o.abs);
    struct stat st, vst;
    bool have = lstat(o.abs, &st) == 0, victim = lstat(n.abs, &vst) == 0;
    if (have && !(victim && vst.st_ino == st.st_ino && vst.st_dev == st.st_dev)) {
        if (victim && pl_watched(n.abs)) {
            if (!S_ISDIR(vst.st_mode)) pl_stash_inode(n.abs, &vst);
            pl_record_entry('R', &n, vst.st_ino, S_ISDIR(vst.st_mode));
        }
        if (S_ISDIR(st.st_mode)) {
            /* a directory cannot be linked from the stash: its rename is undone whole */
            if (!pl_watched(o.abs) || !pl_watched(n.abs))
                pl_die("a directory renamed into or out of the watched ones", o.abs);
            pl_record('M', (unsigned long long)o.pst.st_dev, (unsigned long long)o.pst.st_ino,
                      (unsigned long long)n.pst.st_ino, (unsigned long long)st.st_ino, o.name,
                      strlen(o.name), n.name, strlen(n.name));
        } else {
            pl_stash_inode(o.abs, &st);
            if (pl_watched(o.abs)) pl_record_entry('R', &o, st.st_ino, false);
            if (pl_watched(n.abs)) pl_record_entry('A', &n, st.st_ino, false);
        }
    }
    int r = flags ? get_renameat2()(ofd, old, nfd, new, flags) : get_renameat()(ofd, old, nfd, new);
    int e = errno;
    pthread_mutex_unlock(&pl_mu);
    errno = e;
    return r;
pass:
    return flags ? get_renameat2()(ofd, old, nfd, new, flags) : get_renameat()(ofd, old, nfd, new);
}

int rename(const char *old, const char *new)
{
    return pl_rename(AT_FDCWD, old, AT_FDCWD, new, 0);
}

int renameat(int ofd, const char *old, int nfd, const char *new)
{
    return pl_rename(ofd, old, nfd, new, 0);
}

int renameat2(int ofd, const char *old, int nfd, const char *new, unsigned int flags)
{
    return pl_rename(ofd, old, nfd, new, flags);
}

/* A new name: a hard link (ino known), a symlink or a directory (ino 0: what gets made). */
static void pl_new_name(const pl_path_t *p, ino_t ino, bool isdir)
{
    struct stat st;
    if (lstat(p->abs, &st) != 0) pl_record_entry('A', p, ino, isdir);
}

int linkat(int ofd, const char *old, int nfd, const char *new, int flags)
{
    pl_path_t o, n;
    struct stat st;
    if (!pl_active() || !pl_resolve(nfd, new, &n) || !pl_watched(n.abs) ||
        !pl_resolve(ofd, old, &o))
        return get_linkat()(ofd, old, nfd, new, flags);
    pthread_mutex_lock(&pl_mu);
    int sr = (flags & AT_SYMLINK_FOLLOW) ? stat(o.abs, &st) : lstat(o.abs, &st);
    if (sr == 0) {
        pl_stash_inode(o.abs, &st);
        pl_new_name(&n, st.st_ino, false);
    }
    int r = get_linkat()(ofd, old, nfd, new, flags), e = errno;
    pthread_mutex_unlock(&pl_mu);
    errno = e;
    return r;
}

int link(const char *old, const char *new)
{
    return linkat(AT_FDCWD, old, AT_FDCWD, new, 0);
}

int symlinkat(const char *target, int dirfd, const char *path)
{
    pl_path_t p;
    if (!pl_active() || !pl_resolve(dirfd, path, &p) || !pl_watched(p.abs))
        return get_symlinkat()(target, dirfd, path);
    pthread_mutex_lock(&pl_mu);
    pl_new_name(&p, 0, false);
    int r = get_symlinkat()(target, dirfd, path), e = errno;
    pthread_mutex_unlock(&pl_mu);
    errno = e;
    return r;
}

int symlink(const char *target, const char *path)
{
    return symlinkat(target, AT_FDCWD, path);
}

int mkdirat(int dirfd, const char *path, mode_t mode)
{
    pl_path_t p;
    if (!pl_active() || !pl_resolve(dirfd, path, &p) || !pl_watched(p.abs))
        return get_mkdirat()(dirfd, path, mode);
    pthread_mutex_lock(&pl_mu);
    pl_new_name(&p, 0, true);
    int r = get_mkdirat()(dirfd, path, mode), e = errno;
    pthread_mutex_unlock(&pl_mu);
    errno = e;
    return r;
}

int mkdir(const char *path, mode_t mode)
{
    return mkdirat(AT_FDCWD, path, mode);
}

/* ---- what the model cannot follow -------------------------------------------------------- */

static bool pl_mode_writes(const char *mode)
{
    return strpbrk(mode, "wa+") != NULL;
}

static void pl_refuse_path(const char *call, const char *path, const char *mode)
{
    pl_path_t p;
    if (pl_active() && pl_mode_writes(mode) && pl_resolve(AT_FDCWD, path, &p) && pl_watched(p.abs))
        pl_die(call, p.abs);
}

static void pl_refuse_fd(const char *call, int fd)
{
    struct stat st;
    if (!pl_active() || fd < 0) return;
    pthread_mutex_lock(&pl_mu);
    bool w = pl_fd_watched(fd, &st);
    pthread_mutex_unlock(&pl_mu);
    if (w) pl_die(call, "a watched file");
}

FILE *fopen(const char *path, const char *mode)
{
    pl_refuse_path("fopen for writing (stdio writes bypass the interposer)", path, mode);
    return get_fopen()(path, mode);
}

FILE *fopen64(const char *path, const char *mode)
{
    pl_refuse_path("fopen64 for writing (stdio writes bypass the interposer)", path, mode);
    return get_fopen64()(path, mode);
}

FILE *freopen(const char *path, const char *mode, FILE *f)
{
    if (path) pl_refuse_path("freopen for writing", path, mode);
    return get_freopen()(path, mode, f);
}

FILE *freopen64(const char *path, const char *mode, FILE *f)
{
    if (path) pl_refuse_path("freopen64 for writing", path, mode);
    return get_freopen64()(path, mode, f);
}

FILE *fdopen(int fd, const char *mode)
{
    if (pl_mode_writes(mode)) pl_refuse_fd("fdopen for writing", fd);
    return get_fdopen()(fd, mode);
}

void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    if ((prot & PROT_WRITE) && (flags & MAP_SHARED)) pl_refuse_fd("a shared writable mmap", fd);
    return get_mmap()(addr, len, prot, flags, fd, off);
}

void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    if ((prot & PROT_WRITE) && (flags & MAP_SHARED)) pl_refuse_fd("a shared writable mmap", fd);
    return get_mmap64()(addr, len, prot, flags, fd, off);
}

int fallocate(int fd, int mode, off_t off, off_t len)
{
    pl_refuse_fd("fallocate", fd);
    return get_fallocate()(fd, mode, off, len);
}

int fallocate64(int fd, int mode, off_t off, off_t len)
{
    pl_refuse_fd("fallocate64", fd);
    return get_fallocate64()(fd, mode, off, len);
}

int posix_fallocate(int fd, off_t off, off_t len)
{
    pl_refuse_fd("posix_fallocate", fd);
    return get_posix_fallocate()(fd, off, len);
}

int posix_fallocate64(int fd, off_t off, off_t len)
{
    pl_refuse_fd("posix_fallocate64", fd);
    return get_posix_fallocate64()(fd, off, len);
}

ssize_t copy_file_range(int in, off_t *ioff, int out, off_t *ooff, size_t len, unsigned int fl)
{
    pl_refuse_fd("copy_file_range", out);
    return get_copy_file_range()(in, ioff, out, ooff, len, fl);
}

ssize_t sendfile(int out, int in, off_t *off, size_t n)
{
    pl_refuse_fd("sendfile", out);
    return get_sendfile()(out, in, off, n);
}

ssize_t sendfile64(int out, int in, off_t *off, size_t n)
{
    pl_refuse_fd("sendfile64", out);
    return get_sendfile64()(out, in, off, n);
}

ssize_t splice(int in, off_t *ioff, int out, off_t *ooff, size_t len, unsigned int fl)
{
    pl_refuse_fd("splice", out);
    return get_splice()(in, ioff, out, ooff, len, fl);
}
