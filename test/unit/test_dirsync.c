/* weir_dir_make and weir_dir_sync_parent: what they create and the errors they report. That
 * each new entry is fsynced is observed under strace by
 * test/integration/test_file_output.py; here fsync is interposed to make it fail. */
#include <errno.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cmocka.h>

#include "weir/dirsync.h"

static char root[64];

/* fsync is interposed: one of the directory `fail_path` fails with EIO. */
static char fail_path[512];
static int fsyncs_of_fail_path;

int fsync(int fd)
{
    char link[64], path[512];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    path[n > 0 ? n : 0] = '\0';
    if (fail_path[0] && strcmp(path, fail_path) == 0) {
        fsyncs_of_fail_path++;
        errno = EIO;
        return -1;
    }
    return (int)syscall(SYS_fsync, fd);
}

static int setup(void **state)
{
    (void)state;
    snprintf(root, sizeof root, "/tmp/weir-dirsync-XXXXXX");
    return mkdtemp(root) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    return system(cmd);
}

static bool is_dir(const char *p, mode_t *mode)
{
    struct stat st;
    if (stat(p, &st) != 0 || !S_ISDIR(st.st_mode)) return false;
    if (mode) *mode = st.st_mode & 0777;
    return true;
}

static void test_make_nested(void **state)
{
    (void)state;
    char p[256];
    snprintf(p, sizeof p, "%s/a/b/c", root);
    assert_int_equal(weir_dir_make(p, 0700), 0);
    mode_t m;
    assert_true(is_dir(p, &m));
    assert_int_equal(m, 0700); /* the last one gets the mode asked for */
    snprintf(p, sizeof p, "%s/a/b", root);
    assert_true(is_dir(p, NULL));
    /* again: existing directories are fine, a trailing slash too */
    snprintf(p, sizeof p, "%s/a/b/c/", root);
    assert_int_equal(weir_dir_make(p, 0700), 0);
    assert_int_equal(weir_dir_sync_parent(p), 0);
}

static void test_errors(void **state)
{
    (void)state;
    char p[512];
    snprintf(p, sizeof p, "%s/file", root);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fclose(f);
    snprintf(p, sizeof p, "%s/file/sub", root);
    assert_int_equal(weir_dir_make(p, 0755), -1);
    assert_int_equal(errno, ENOTDIR);
    /* a component longer than NAME_MAX (255) */
    char longname[300];
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    snprintf(p, sizeof p, "%s/%s/sub", root, longname);
    assert_int_equal(weir_dir_make(p, 0755), -1);
    assert_int_equal(errno, ENAMETOOLONG);
    /* the parent of a relative name is "." */
    assert_int_equal(weir_dir_sync_parent("no-slash"), 0);
    snprintf(p, sizeof p, "%s/missing/x", root);
    assert_int_equal(weir_dir_sync_parent(p), -1);
    assert_int_equal(errno, ENOENT);
}

/* A new directory whose parent cannot be fsynced is an error, and is removed: the next call
 * makes it again (and syncs its parent) instead of taking it for durable. */
static void test_failed_parent_sync_leaves_nothing(void **state)
{
    (void)state;
    char p[512];
    snprintf(fail_path, sizeof fail_path, "%s", root);
    snprintf(p, sizeof p, "%s/new", root);
    errno = 0;
    assert_int_equal(weir_dir_make(p, 0700), -1);
    assert_int_equal(errno, EIO);
    assert_false(is_dir(p, NULL));
    assert_int_equal(fsyncs_of_fail_path, 1);
    assert_int_equal(weir_dir_make(p, 0700), -1); /* tried again, not taken as made */
    assert_int_equal(fsyncs_of_fail_path, 2);
    fail_path[0] = '\0';
    assert_int_equal(weir_dir_make(p, 0700), 0);
    assert_true(is_dir(p, NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_make_nested),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_failed_parent_sync_leaves_nothing),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
