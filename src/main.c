/* weir's command line, signals, start-up and orderly shutdown.
 *
 * Configuration lookup follows the Fluentd image: -c/--config, else $FLUENTD_CONF (a file name
 * under /fluentd/etc/ or an absolute path), else /fluentd/etc/fluent.conf, else the embedded
 * default (forward on 24224 and HTTP on 8888 into a local directory), announced in the log.
 *
 * SIGTERM/SIGINT stop accepting, finish what is in flight and exit 0; SIGUSR1 flushes buffers;
 * SIGHUP (and SIGUSR2, Fluentd's graceful reload) reloads the configuration file (see
 * weir_engine_reload). */
#include <getopt.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "weir/config.h"
#include "weir/engine.h"
#include "weir/log.h"
#include "weir/s3.h"

#define FLUENTD_ETC "/fluentd/etc"

/* The embedded default: what scripts/run.sh starts when no configuration is given. */
static const char embedded_default[] =
    "# weir's embedded default: receive with the forward protocol and HTTP, keep events in\n"
    "# hourly files under ./weir-out (override the directory with WEIR_OUT_DIR).\n"
    "<source>\n"
    "  @type forward\n"
    "  port 24224\n"
    "</source>\n"
    "<source>\n"
    "  @type http\n"
    "  port 8888\n"
    "</source>\n"
    "<match **>\n"
    "  @type file\n"
    "  path \"#{ENV['WEIR_OUT_DIR']}/${tag}/%Y%m%d%H\"\n"
    "  append true\n"
    "  <format>\n"
    "    @type json\n"
    "  </format>\n"
    "  <inject>\n"
    "    time_key time\n"
    "    time_type string\n"
    "    time_format %Y-%m-%dT%H:%M:%S.%NZ\n"
    "    utc true\n"
    "    tag_key tag\n"
    "  </inject>\n"
    "  <buffer tag,time>\n"
    "    @type file\n"
    "    path \"#{ENV['WEIR_OUT_DIR']}/.buffer\"\n"
    "    timekey 60\n"
    "    timekey_wait 5\n"
    "    timekey_use_utc true\n"
    "    flush_at_shutdown true\n"
    "  </buffer>\n"
    "</match>\n";

static void usage(FILE *f)
{
    fprintf(f,
            "usage: weir [options]\n"
            "       weir verify ...   check an S3 output's signed digests against the bucket\n"
            "                         (weir verify --help; docs/integrity.md)\n"
            "  -c, --config FILE   fluent.conf to run (default: $FLUENTD_CONF, then\n"
            "                      " FLUENTD_ETC "/fluent.conf, then the embedded default)\n"
            "      --dry-run       check the configuration and exit 0 (valid) or 1\n"
            "      --show-config   print the configuration (secrets masked) and exit\n"
            "  -v, --verbose       more log output (repeat for trace)\n"
            "  -q, --quiet         less log output (repeat for errors only)\n"
            "      --version       print the version\n"
            "  -h, --help          this text\n"
            "Signals: TERM/INT stop gracefully, USR1 flushes buffers, HUP (or USR2, as\n"
            "Fluentd) reloads the configuration (a bad one is refused, the running one stays).\n");
}

typedef struct app {
    uv_loop_t *loop;
    weir_engine_t *engine;
    uv_signal_t sig_term, sig_int, sig_usr1, sig_hup, sig_usr2;
    bool stopping;
    bool reloading;
    bool stop_after_reload;
    const char *path;          /* the configuration file, NULL for the embedded default */
    weir_conf_section_t *root; /* the configuration running now */
    /* Every tree ever loaded, freed at exit: a plugin kept across a reload may still point
     * into the tree it was built from, and trees are small. */
    weir_conf_section_t **trees;
    size_t ntrees;
} app_t;

static weir_conf_section_t *load_config(const char *path, weir_err_t *err);

static void close_walk(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

static void engine_stopped(void *arg)
{
    app_t *app = arg;
    weir_info("shutdown complete");
    /* With the signal watchers gone nothing is left on the loop, so uv_run returns once the
     * last close callback has run. */
    uv_close((uv_handle_t *)&app->sig_term, NULL);
    uv_close((uv_handle_t *)&app->sig_int, NULL);
    uv_close((uv_handle_t *)&app->sig_usr1, NULL);
    uv_close((uv_handle_t *)&app->sig_hup, NULL);
    uv_close((uv_handle_t *)&app->sig_usr2, NULL);
}

static void keep_tree(app_t *app, weir_conf_section_t *t)
{
    app->trees = weir_realloc(app->trees, (app->ntrees + 1) * sizeof *app->trees);
    app->trees[app->ntrees++] = t;
}

static void reloaded(void *arg, bool installed, const char *why)
{
    app_t *app = arg;
    app->reloading = false;
    if (installed)
        app->root = app->trees[app->ntrees - 1];
    else
        weir_error("reload: the previous configuration runs again (%s)", why ? why : "");
    if (app->stop_after_reload) weir_engine_stop(app->engine, engine_stopped, app);
}

static void reload(app_t *app, const char *signame)
{
    if (app->stopping || app->reloading) {
        weir_warn("received %s while %s; ignoring it", signame,
                  app->stopping ? "stopping" : "reloading");
        return;
    }
    weir_info("received %s: reloading %s", signame, app->path ? app->path : "the embedded default");
    weir_err_t err = {{0}};
    weir_conf_section_t *next = load_config(app->path, &err);
    if (!next) {
        weir_error("reload refused, the running configuration stays: %s", err.msg);
        return;
    }
    /* set before the call: the reload may complete (and call reloaded) inside it */
    keep_tree(app, next);
    app->reloading = true;
    if (weir_engine_reload(app->engine, app->root, next, reloaded, app, &err) != 0) {
        weir_error("reload refused, the running configuration stays: %s", err.msg);
        app->reloading = false;
        app->ntrees--;
        weir_conf_free(next);
    }
}

static void on_signal(uv_signal_t *s, int signum)
{
    app_t *app = s->data;
    switch (signum) {
    case SIGTERM:
    case SIGINT:
        if (app->reloading) {
            weir_info("received %s during a reload: stopping once it is done",
                      signum == SIGTERM ? "SIGTERM" : "SIGINT");
            app->stopping = app->stop_after_reload = true;
            return;
        }
        if (app->stopping) {
            weir_warn("received %s again while stopping; still finishing in-flight work",
                      strsignal(signum));
            return;
        }
        app->stopping = true;
        weir_info("received %s: stopping inputs, finishing in-flight events",
                  signum == SIGTERM ? "SIGTERM" : "SIGINT");
        weir_engine_stop(app->engine, engine_stopped, app);
        break;
    case SIGUSR1:
        weir_info("received SIGUSR1: flushing buffers");
        weir_engine_flush(app->engine);
        break;
    case SIGHUP:
    case SIGUSR2: /* Fluentd's graceful reload signal */
        reload(app, signum == SIGHUP ? "SIGHUP" : "SIGUSR2");
        break;
    }
}

static void watch_signal(app_t *app, uv_signal_t *s, int signum)
{
    uv_signal_init(app->loop, s);
    s->data = app;
    uv_signal_start(s, on_signal, signum);
}

/* Resolves which configuration to read. Returns a path, or NULL for the embedded default. */
static const char *find_config(const char *cli, char *buf, size_t buflen)
{
    if (cli) return cli;
    const char *env = getenv("FLUENTD_CONF");
    if (env && *env) {
        if (env[0] == '/') return env;
        snprintf(buf, buflen, FLUENTD_ETC "/%s", env);
        return buf;
    }
    if (access(FLUENTD_ETC "/fluent.conf", F_OK) == 0) return FLUENTD_ETC "/fluent.conf";
    return NULL;
}

static weir_conf_section_t *load_config(const char *path, weir_err_t *err)
{
    if (path) return weir_conf_parse_file(path, err); /* logged once <system> set the format */
    if (!getenv("WEIR_OUT_DIR")) setenv("WEIR_OUT_DIR", "./weir-out", 1);
    weir_info("no configuration given (-c, $FLUENTD_CONF, " FLUENTD_ETC
              "/fluent.conf): running the embedded default into %s",
              getenv("WEIR_OUT_DIR"));
    return weir_conf_parse_string(embedded_default, sizeof embedded_default - 1,
                                  "<embedded default>", err);
}

/* The configuration in the log. In JSON log format the dump is one message, so that every
 * line of the log stays one JSON object. */
static void log_config(const weir_conf_section_t *root)
{
    if (weir_log_get_format() != WEIR_LOG_FORMAT_JSON) {
        weir_info("using configuration (secrets masked):");
        weir_conf_dump(root, stderr);
        return;
    }
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) return;
    weir_conf_dump(root, f);
    fclose(f);
    weir_info("using configuration (secrets masked):\n%s", text);
    free(text);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'}, {"dry-run", no_argument, NULL, 'n'},
        {"show-config", no_argument, NULL, 's'},  {"verbose", no_argument, NULL, 'v'},
        {"quiet", no_argument, NULL, 'q'},        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    if (argc > 1 && strcmp(argv[1], "verify") == 0) return weir_verify_main(argc - 1, argv + 1);
    const char *config = NULL;
    bool dry_run = false, show = false;
    int verbosity = 0;
    int c;
    while ((c = getopt_long(argc, argv, "c:vqh", longopts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config = optarg;
            break;
        case 'n':
            dry_run = true;
            break;
        case 's':
            show = true;
            break;
        case 'v':
            verbosity--;
            break;
        case 'q':
            verbosity++;
            break;
        case 'V':
            printf("weir %s\n", WEIR_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "weir: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    int level = WEIR_LOG_INFO + verbosity;
    if (level < WEIR_LOG_TRACE) level = WEIR_LOG_TRACE;
    if (level > WEIR_LOG_FATAL) level = WEIR_LOG_FATAL;
    weir_log_set_level((weir_log_level_t)level);
    signal(SIGPIPE, SIG_IGN);
    /* libuv's pool runs fsyncs and output jobs; its default of 4 lets a few slow uploads hold
     * back the syncs that acknowledgements wait for. Must be set before the pool starts. */
    setenv("UV_THREADPOOL_SIZE", "16", 0);
#ifdef __GLIBC__
    /* glibc gives each thread that allocates its own arena and keeps freed memory there: with
     * upload jobs on up to 16 pool threads, bench/s3.sh peaked at 95 MB RSS; two arenas hold
     * it at about 50 MB at the same throughput (bench/RESULTS.md). MALLOC_ARENA_MAX in the
     * environment still wins. */
    if (!getenv("MALLOC_ARENA_MAX")) mallopt(M_ARENA_MAX, 2);
#endif

    char pathbuf[4096];
    const char *path = find_config(config, pathbuf, sizeof pathbuf);
    weir_err_t err = {{0}};
    weir_conf_section_t *root = load_config(path, &err);
    if (!root) {
        weir_log(WEIR_LOG_FATAL, "invalid configuration: %s", err.msg);
        return 1;
    }
    if (show) {
        weir_conf_dump(root, stdout);
        weir_conf_free(root);
        return 0;
    }

    app_t app = {0};
    app.loop = uv_default_loop();
    app.path = path;
    app.root = root;
    keep_tree(&app, root);
    weir_engine_opts_t opts = {.dry_run = dry_run, .log_level_override = verbosity ? level : -1};
    app.engine = weir_engine_new(app.loop, root, &opts, &err);
    int rc = 0;
    if (!app.engine) {
        weir_log(WEIR_LOG_FATAL, "invalid configuration: %s", err.msg);
        rc = 1;
        goto out;
    }
    if (path) weir_info("read configuration file path=\"%s\"", path);
    if (dry_run) {
        weir_info("configuration is valid: %s", path ? path : "<embedded default>");
        goto out;
    }
    if (weir_log_enabled(WEIR_LOG_INFO)) log_config(root);
    if (weir_engine_start(app.engine, &err) != 0) {
        weir_log(WEIR_LOG_FATAL, "cannot start: %s", err.msg);
        rc = 1;
        goto out;
    }
    watch_signal(&app, &app.sig_term, SIGTERM);
    watch_signal(&app, &app.sig_int, SIGINT);
    watch_signal(&app, &app.sig_usr1, SIGUSR1);
    watch_signal(&app, &app.sig_hup, SIGHUP);
    watch_signal(&app, &app.sig_usr2, SIGUSR2);
    weir_info("weir %s started (pid %d)", WEIR_VERSION, (int)getpid());
    uv_run(app.loop, UV_RUN_DEFAULT);

out:
    weir_engine_free(app.engine);
    uv_walk(app.loop, close_walk, NULL);
    uv_run(app.loop, UV_RUN_DEFAULT);
    uv_loop_close(app.loop);
    for (size_t i = 0; i < app.ntrees; i++)
        weir_conf_free(app.trees[i]);
    free(app.trees);
    return rc;
}
