/* Making directory entries durable.
 *
 * fsync(file) makes a file's bytes and inode durable, not the entry that names it: that entry
 * is part of the directory, and after a power loss a file created, renamed or unlinked since its
 * directory's last fsync can be back in its old state. So whoever reports something stored
 * (and lets its source be deleted) after creating a file or directory must also fsync the
 * directory holding the new entry. */
#ifndef WEIR_DIRSYNC_H
#define WEIR_DIRSYNC_H

#include <sys/types.h>

#include "weir/common.h"

/* fsync of the directory `dir` itself: makes the entries created, renamed or removed in it
 * durable. 0, or -1 with errno. */
int weir_dir_sync(const char *dir);

/* fsync of the directory that holds `path` (the part before its last '/', "/" for "/x", "."
 * when there is no '/'). 0, or -1 with errno. */
int weir_dir_sync_parent(const char *path);

/* Creates `dir` (with `mode`) and any missing parent (0755), fsyncing the parent of each
 * directory it creates. Directories that exist are left alone. Calls hold one process-wide lock,
 * so a caller that finds a directory existing knows that its entry is durable (no other thread
 * is between its mkdir and the fsync). 0, or -1 with errno (e.g. ENAMETOOLONG, ENOTDIR). */
int weir_dir_make(const char *dir, mode_t mode);

/* Takes an exclusive flock on dir/name (created if missing) and writes this process's pid
 * into it, so that one process at a time uses the directory. Returns the descriptor (closing
 * it releases the lock), or -1 with err set: "<what> <dir> is in use by another weir process
 * (pid N) (lock held)", the pid when the file names one. */
int weir_dir_lock(const char *dir, const char *name, const char *what, weir_err_t *err);

#endif
