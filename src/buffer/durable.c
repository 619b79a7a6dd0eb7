/* Durable file-system steps the buffer needs: a write that writes everything, a directory
 * fsync (a create, rename or unlink survives a power cut only once its directory is fsynced),
 * and mkdir -p that makes each directory it creates durable in its parent. */
#include "buffer_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int buf_write_full(int fd, struct iovec *iov, int n)
{
    while (n > 0) {
        ssize_t w = writev(fd, iov, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        while (n > 0 && (size_t)w >= iov->iov_len) {
            w -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (char *)iov->iov_base + w;
            iov->iov_len -= (size_t)w;
        }
    }
    return 0;
}

/* Makes the entries of a directory durable (files created, renamed or removed in it). A
 * create or rename is lost at a power cut until its directory is fsynced, whatever was
 * fsynced of the file itself. Returns 0 or -1 (errno set). */
int buf_fsync_dir(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    errno = e;
    return rc;
}

/* mkdir -p. Each directory it creates is made durable in its parent (fsync of the parent),
 * so a buffer or backup directory cannot vanish at a power cut with the files in it. */
int buf_mkdir_p(const char *path, mode_t mode)
{
    char *p = weir_strdup(path);
    int rc = 0;
    for (char *s = p + 1; rc == 0; s++) {
        bool last = !*s;
        if (!last && *s != '/') continue;
        *s = '\0';
        /* parents: ordinary directories */
        if (mkdir(p, last ? mode : 0755) == 0) {
            char *slash = strrchr(p, '/');
            if (slash && slash > p) {
                *slash = '\0';
                rc = buf_fsync_dir(p);
                *slash = '/';
            } else {
                rc = buf_fsync_dir("/");
            }
        } else if (errno != EEXIST) {
            rc = -1;
        }
        if (last) break;
        *s = '/';
    }
    free(p);
    return rc;
}
