/* Record fields by name or by Fluentd's record_accessor path (see record.h). A path is parsed
 * once, at configuration; a lookup walks each map on the path once, keeping the last pair whose
 * key matches, and skips values it does not need with weir_mp_skip (linear, depth-bounded). */
#include "weir/record.h"

#include <stdlib.h>
#include <string.h>

#include "weir/mp.h"

static void add_part(weir_raccess_t *ra, const char *key, size_t key_len, int64_t index)
{
    ra->parts = weir_realloc(ra->parts, (ra->n + 1) * sizeof *ra->parts);
    ra->parts[ra->n++] =
        (weir_raccess_part_t){key ? weir_strndup(key, key_len) : NULL, key_len, index};
}

/* One "[...]" element at s[*i] (on the '['): a quoted key or an integer. */
static int parse_bracket(weir_raccess_t *ra, const char *s, size_t *i, weir_err_t *err)
{
    size_t p = *i + 1;
    char q = s[p];
    if (q == '\'' || q == '"') {
        const char *end = strchr(s + p + 1, q);
        if (!end || end[1] != ']') {
            weir_err_set(err, "record accessor '%s': unterminated [%c...%c]", s, q, q);
            return -1;
        }
        add_part(ra, s + p + 1, (size_t)(end - (s + p + 1)), 0);
        *i = (size_t)(end - s) + 2;
        return 0;
    }
    char *endp;
    long long v = strtoll(s + p, &endp, 10);
    if (endp == s + p || *endp != ']') {
        weir_err_set(err, "record accessor '%s': expected ['key'] or [index] at offset %zu", s, *i);
        return -1;
    }
    add_part(ra, NULL, 0, v);
    *i = (size_t)(endp - s) + 1;
    return 0;
}

int weir_raccess_init(weir_raccess_t *ra, const char *spec, weir_err_t *err)
{
    *ra = (weir_raccess_t){0};
    if (spec[0] != '$') {
        add_part(ra, spec, strlen(spec), 0);
        return 0;
    }
    size_t i = 1;
    while (spec[i]) {
        if (ra->n >= WEIR_RACCESS_MAX_DEPTH) {
            weir_err_set(err, "record accessor '%s': more than %d elements", spec,
                         WEIR_RACCESS_MAX_DEPTH);
            goto err;
        }
        if (spec[i] == '[') {
            if (parse_bracket(ra, spec, &i, err) != 0) goto err;
        } else if (spec[i] == '.') {
            size_t n = strcspn(spec + i + 1, ".[");
            if (n == 0) {
                weir_err_set(err, "record accessor '%s': empty key at offset %zu", spec, i + 1);
                goto err;
            }
            add_part(ra, spec + i + 1, n, 0);
            i += 1 + n;
        } else {
            weir_err_set(err, "record accessor '%s': expected '.' or '[' at offset %zu", spec, i);
            goto err;
        }
    }
    if (ra->n == 0) {
        weir_err_set(err, "record accessor '%s': no key after '$'", spec);
        goto err;
    }
    return 0;
err:
    weir_raccess_free(ra);
    return -1;
}

void weir_raccess_free(weir_raccess_t *ra)
{
    for (size_t i = 0; i < ra->n; i++)
        free(ra->parts[i].key);
    free(ra->parts);
    *ra = (weir_raccess_t){0};
}

bool weir_raccess_is_top(const weir_raccess_t *ra)
{
    return ra->n == 1 && ra->parts[0].key;
}

int weir_record_get(const char *rec, size_t len, const char *key, size_t key_len, const char **val,
                    size_t *vlen)
{
    weir_mp_obj_t o;
    ssize_t h = weir_mp_read(rec, len, &o);
    if (h <= 0) return -1;
    if (o.type != WEIR_MP_MAP) return 0;
    size_t off = (size_t)h;
    int found = 0;
    for (uint32_t i = 0; i < o.v.n; i++) {
        weir_mp_obj_t k;
        ssize_t kl = weir_mp_read(rec + off, len - off, &k);
        if (kl <= 0) return -1;
        if (k.type == WEIR_MP_ARRAY || k.type == WEIR_MP_MAP)
            kl = weir_mp_skip(rec + off, len - off, WEIR_MP_MAX_DEPTH);
        if (kl <= 0) return -1;
        bool hit = (k.type == WEIR_MP_STR || k.type == WEIR_MP_BIN) && k.len == key_len &&
                   memcmp(k.ptr, key, key_len) == 0;
        off += (size_t)kl;
        ssize_t vl = weir_mp_skip(rec + off, len - off, WEIR_MP_MAX_DEPTH);
        if (vl <= 0) return -1;
        if (hit) {
            *val = rec + off;
            *vlen = (size_t)vl;
            found = 1;
        }
        off += (size_t)vl;
    }
    return found;
}

static int array_get(const char *a, size_t len, int64_t index, const char **val, size_t *vlen)
{
    weir_mp_obj_t o;
    ssize_t h = weir_mp_read(a, len, &o);
    if (h <= 0) return -1;
    if (o.type != WEIR_MP_ARRAY) return 0;
    if (index < 0) index += o.v.n;
    if (index < 0 || index >= (int64_t)o.v.n) return 0;
    size_t off = (size_t)h;
    for (int64_t i = 0;; i++) {
        ssize_t vl = weir_mp_skip(a + off, len - off, WEIR_MP_MAX_DEPTH);
        if (vl <= 0) return -1;
        if (i == index) {
            *val = a + off;
            *vlen = (size_t)vl;
            return 1;
        }
        off += (size_t)vl;
    }
}

int weir_raccess_get(const weir_raccess_t *ra, const char *rec, size_t len, const char **val,
                     size_t *vlen)
{
    const char *cur = rec;
    size_t cur_len = len;
    for (size_t i = 0; i < ra->n; i++) {
        const weir_raccess_part_t *p = &ra->parts[i];
        int r = p->key ? weir_record_get(cur, cur_len, p->key, p->key_len, &cur, &cur_len)
                       : array_get(cur, cur_len, p->index, &cur, &cur_len);
        if (r <= 0) return r;
    }
    *val = cur;
    *vlen = cur_len;
    return 1;
}
