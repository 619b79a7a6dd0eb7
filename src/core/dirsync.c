/* Durable directory entries (see dirsync.h): one fsync of the parent after each mkdir, and the
 * parent of a path found by string, without touching the file system more than once.
 * Invariant: under dir_lock, every directory weir_dir_make has created has a durable entry
 * once the call returns, and no other weir_dir_make call sees it before then. */
#include "weir/dirsync.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "weir/common.h"

static pthread_mutex_t dir_lock = PTHREAD_MUTEX_INITIALIZER;

int weir_dir_sync(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    errno = e;
    return rc;
}

int weir_dir_sync_parent(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir =
        slash ? weir_strndup(path, slash == path ? 1 : (size_t)(slash - path)) : weir_strdup(".");
    int rc = weir_dir_sync(dir);
    int e = errno;
    free(dir);
    errno = e;
    return rc;
}

/* mkdir, then fsync of the parent when the directory is new. When that fsync fails the
 * directory is removed again: left in place, the next call would find it and take its entry
 * for durable. */
static int make_one(const char *dir, mode_t mode)
{
    if (mkdir(dir, mode) != 0) return errno == EEXIST ? 0 : -1;
    if (weir_dir_sync_parent(dir) == 0) return 0;
    int e = errno;
    rmdir(dir);
    errno = e;
    return -1;
}

int weir_dir_make(const char *dir, mode_t mode)
{
    char *p = weir_strdup(dir);
    int rc = 0;
    pthread_mutex_lock(&dir_lock);
    for (char *s = p + 1; *s && rc == 0; s++) {
        if (*s != '/' || s[1] == '\0') continue;
        *s = '\0';
        rc = make_one(p, 0755);
        *s = '/';
    }
    if (rc == 0 && *p) rc = make_one(p, mode);
    int e = errno;
    pthread_mutex_unlock(&dir_lock);
    free(p);
    errno = e;
    return rc;
}

int weir_dir_lock(const char *dir, const char *name, const char *what, weir_err_t *err)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = weir_malloc(n);
    snprintf(p, n, "%s/%s", dir, name);
    int fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    free(p);
    char holder[32] = "";
    if (fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        ssize_t r = pread(fd, holder, sizeof holder - 1, 0);
        holder[r > 0 ? r : 0] = '\0';
        holder[strcspn(holder, "\n")] = '\0';
        close(fd);
        fd = -1;
        errno = e;
    }
    if (fd < 0) {
        int e = errno;
        weir_err_set(err, "%s %s is in use by another weir process%s%s%s (%s)", what, dir,
                     holder[0] ? " (pid " : "", holder, holder[0] ? ")" : "",
                     e == EWOULDBLOCK ? "lock held" : strerror(e));
        return -1;
    }
    char pid[32];
    int len = snprintf(pid, sizeof pid, "%d\n", (int)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)len, 0) != len) {
        /* the lock holds without the pid; only the message naming the holder loses it */
    }
    return fd;
}
