/* libFuzzer target for the fluent.conf lexer and parser (src/config/): the input is the text of
 * a configuration file. It is parsed with conf_parse_string_confined, as a file in a scratch
 * directory holding a few fixture files, so @include works but can name only those (never a
 * device, never a walk of the file system); the environment is cleared at start and holds one
 * variable, so "#{ENV['..']}" expands without depending on the machine. A tree that parses goes
 * through every typed getter for every param (the JSON array / hash splitters included), the
 * unused check, and weir_conf_dump; the dump is parsed again and must give the same tree.
 *
 * Beyond the sanitizers, it aborts when an error has no message, or when the dump does not
 * read back as the tree it was written from (a value masked as a secret excepted).
 *
 * Seeds: test/fuzz/make_corpus.py fuzz_config DIR (every configuration in examples/ and
 * test/data/config, and the syntax the unit tests cover). */
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../src/config/conf_internal.h"
#include "weir/config.h"
#include "weir/log.h"

#define FUZZ_MASK "xxxxxx" /* what weir_conf_dump writes for a secret */

static char dir[64];
static char name[128];
static FILE *devnull;

/* The files an @include in the input can reach: params, a section, and the two ways an
 * included file can be unbalanced. None includes anything, so includes cannot fan out. */
static const struct {
    const char *name, *text;
} fixtures[] = {
    {"params.conf", "port 24224\nbind \"0.0.0.0\"\nlist [\"a\", \"b\"]\n"},
    {"section.conf", "<match **>\n  @type stdout\n  <buffer tag>\n    path /b\n  </buffer>\n"
                     "</match>\n"},
    {"open.conf", "<buffer>\n"},
    {"close.conf", "</source>\n"},
    {"bad.conf", "ok 1\nbad \"unterminated\n"},
};

static void check(int ok, const char *what)
{
    if (ok) return;
    fprintf(stderr, "fuzz_config: invariant broken: %s\n", what);
    abort();
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void remove_dir(void)
{
    nftw(dir, rm_entry, 4, FTW_DEPTH | FTW_PHYS);
}

static void init(void)
{
    weir_log_set_level(WEIR_LOG_FATAL);
    clearenv();
    setenv("WEIR_FUZZ", "from the environment", 1);
    snprintf(dir, sizeof dir, "/tmp/weir_fuzz_config_XXXXXX");
    check(mkdtemp(dir) != NULL, "mkdtemp failed");
    atexit(remove_dir);
    for (size_t i = 0; i < sizeof fixtures / sizeof *fixtures; i++) {
        char path[128];
        snprintf(path, sizeof path, "%s/%s", dir, fixtures[i].name);
        FILE *f = fopen(path, "w");
        check(f != NULL, "cannot write a fixture");
        fputs(fixtures[i].text, f);
        fclose(f);
    }
    snprintf(name, sizeof name, "%s/fuzz.conf", dir);
    devnull = fopen("/dev/null", "w");
    check(devnull != NULL, "cannot open /dev/null");
}

/* Every getter on one param: each either converts or says why not. */
static void get_all(weir_conf_section_t *s, const char *key)
{
    static const char *const choices[] = {"json", "ltsv", "none", NULL};
    weir_err_t err;
    const char *str;
    int64_t i;
    uint64_t u;
    double d;
    bool b;
    int e;
    char **v, **k;
    size_t n;
    check(weir_conf_get_str(s, key, &str, &err) == 1, "a present key is not found");
    if (weir_conf_get_int(s, key, &i, &err) < 0) check(err.msg[0] != '\0', "int: no message");
    if (weir_conf_get_size(s, key, &u, &err) < 0) check(err.msg[0] != '\0', "size: no message");
    if (weir_conf_get_time(s, key, &d, &err) < 0) check(err.msg[0] != '\0', "time: no message");
    if (weir_conf_get_bool(s, key, &b, &err) < 0) check(err.msg[0] != '\0', "bool: no message");
    if (weir_conf_get_float(s, key, &d, &err) < 0) check(err.msg[0] != '\0', "float: no message");
    if (weir_conf_get_enum(s, key, choices, &e, &err) < 0)
        check(err.msg[0] != '\0', "enum: no message");
    if (weir_conf_get_array(s, key, &v, &n, &err) == 1)
        weir_conf_strv_free(v, n);
    else
        check(err.msg[0] != '\0', "array: no message");
    if (weir_conf_get_hash(s, key, &k, &v, &n, &err) == 1) {
        weir_conf_strv_free(k, n);
        weir_conf_strv_free(v, n);
    } else {
        check(err.msg[0] != '\0', "hash: no message");
    }
}

static void walk(weir_conf_section_t *s)
{
    for (size_t i = 0; i < s->nparams; i++)
        get_all(s, s->params[i].key);
    for (size_t i = 0; i < s->nchildren; i++)
        walk(s->children[i]);
}

static void same_tree(const weir_conf_section_t *a, const weir_conf_section_t *b)
{
    check(strcmp(a->name, b->name) == 0 && strcmp(a->arg, b->arg) == 0,
          "the dump changed a section");
    check(a->nparams == b->nparams && a->nchildren == b->nchildren,
          "the dump changed what a section holds");
    for (size_t i = 0; i < a->nparams; i++) {
        const weir_conf_param_t *p = &a->params[i], *q = &b->params[i];
        check(strcmp(p->key, q->key) == 0, "the dump changed a key");
        /* a secret, or a secret inside a value (a URL's password), is masked in the dump */
        check(strcmp(p->value, q->value) == 0 || strstr(q->value, FUZZ_MASK),
              "the dump changed a value");
    }
    for (size_t i = 0; i < a->nchildren; i++)
        same_tree(a->children[i], b->children[i]);
}

static void roundtrip(const weir_conf_section_t *root)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    check(f != NULL, "open_memstream failed");
    weir_conf_dump(root, f);
    fclose(f);
    weir_err_t err = {{0}};
    weir_conf_section_t *again = conf_parse_string_confined(text, len, name, &err);
    if (!again) fprintf(stderr, "fuzz_config: the dump does not parse: %s\n%s", err.msg, text);
    check(again != NULL, "the dump does not parse");
    same_tree(root, again);
    weir_conf_free(again);
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!devnull) init();
    weir_err_t err = {{0}};
    weir_conf_section_t *root = conf_parse_string_confined((const char *)data, size, name, &err);
    if (!root) {
        check(err.msg[0] != '\0', "a parse error without a message");
        return 0;
    }
    roundtrip(root);
    walk(root);
    if (weir_conf_check_unused(root, &err) < 0) check(err.msg[0] != '\0', "unused: no message");
    weir_conf_dump(root, devnull);
    weir_conf_free(root);
    return 0;
}
