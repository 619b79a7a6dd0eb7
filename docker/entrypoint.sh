#!/bin/sh
# The image's entry point, as the Fluentd image's:
#
#   (no command) or `weir [options]`  runs weir; without -c/--config it reads
#                          $WEIR_ETC_DIR/$FLUENTD_CONF (default /fluentd/etc/fluent.conf;
#                          an absolute FLUENTD_CONF is used as it is; WEIR_ETC_DIR is there
#                          so the test suite can run this script outside an image)
#   `-v`, `--dry-run`...   options alone are weir's: `docker run IMAGE --dry-run`
#   `healthcheck`          the image's HEALTHCHECK (below)
#   anything else          runs as given: `docker run -it IMAGE sh`
#
# weir runs as PID 1 (exec): it handles SIGTERM (finish in-flight events, exit 0) and SIGUSR1
# (flush buffers now) itself.
#
# healthcheck: asks the running weir something its event loop must answer, needing nothing
# beyond bash (in every Debian image), so no curl in the image. $WEIR_HEALTHCHECK picks what:
#   udp://127.0.0.1:24224          (default) the forward protocol's UDP heartbeat: one datagram
#                                  out, weir's loop thread answers one zero byte. Nothing enters
#                                  the pipeline. Needs a <source> @type forward on that port.
#   http://127.0.0.1:24231/healthz an HTTP GET (plain HTTP) that must answer 200, e.g. the
#                                  metrics listener's /healthz, or in_http's port (GET = 200)
#   none                           always healthy
# Exit 0 = healthy, 1 = unhealthy (the only codes Docker defines).
set -e

etc=${WEIR_ETC_DIR:-/fluentd/etc}
conf=${FLUENTD_CONF:-fluent.conf}
case "$conf" in
/*) ;;
*) conf="$etc/$conf" ;;
esac

health_udp() {
    # $1 host, $2 port
    exec bash -c '
        exec 3<>"/dev/udp/$1/$2" || exit 1
        printf "\0" >&3 || exit 1
        # the answer is one NUL byte: read up to it (bash cannot store a NUL, -d "" stops at it)
        if IFS= read -r -t 5 -d "" _ <&3; then exit 0; fi
        echo "unhealthy: no answer to a UDP heartbeat on $1:$2 within 5 s" >&2
        exit 1' healthcheck "$1" "$2"
}

health_http() {
    # $1 host, $2 port, $3 path
    exec bash -c '
        exec 3<>"/dev/tcp/$1/$2" || exit 1
        printf "GET %s HTTP/1.0\r\nHost: %s:%s\r\nConnection: close\r\n\r\n" "$3" "$1" "$2" >&3 \
            || exit 1
        if ! IFS= read -r -t 5 status <&3; then
            echo "unhealthy: no HTTP answer from $1:$2 within 5 s" >&2
            exit 1
        fi
        case "$status" in
        "HTTP/1."?" 200"*) exit 0 ;;
        esac
        echo "unhealthy: GET $3 on $1:$2 answered: $status" >&2
        exit 1' healthcheck "$1" "$2" "$3"
}

healthcheck() {
    target=${WEIR_HEALTHCHECK:-udp://127.0.0.1:24224}
    case "$target" in
    none) exit 0 ;;
    udp://*)
        hp=${target#udp://}
        hp=${hp%%/*}
        health_udp "${hp%:*}" "${hp##*:}"
        ;;
    http://*)
        rest=${target#http://}
        hp=${rest%%/*}
        path=${rest#"$hp"}
        [ -n "$path" ] || path=/
        port=${hp##*:}
        [ "$port" = "$hp" ] && port=80
        health_http "${hp%:*}" "$port" "$path"
        ;;
    *)
        echo "WEIR_HEALTHCHECK must be udp://HOST:PORT, http://HOST:PORT/PATH or none," \
            "not '$target'" >&2
        exit 1
        ;;
    esac
}

# options alone: they are weir's
if [ "$#" -eq 0 ] || [ "${1#-}" != "$1" ]; then
    set -- weir "$@"
fi

case "$1" in
healthcheck)
    healthcheck
    ;;
weir)
    has_config=no
    for a in "$@"; do
        case "$a" in
        -c | -c?* | --config | --config=*) has_config=yes ;;
        esac
    done
    if [ "$has_config" = no ]; then
        set -- "$@" -c "$conf"
    fi
    ;;
esac
exec "$@"
