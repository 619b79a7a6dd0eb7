/* JSON inside fluent.conf: array and hash values (`tags ["a", "b"]`, `{"k": "v"}`).
 *
 * A small validating scanner rather than jansson, for two reasons: the lexer must find where a
 * value that spans lines ends, with '#' comments allowed between tokens as Fluentd allows them,
 * and the getters keep numbers as the text the user wrote ("1.50" stays "1.50"), which a parser
 * into doubles cannot. Invariant: every function stops at j->end and never reads past it; a
 * failure leaves err_at == end exactly when the text ran out, which the lexer reports as an
 * unterminated array or hash. */
#include <string.h>

#include "conf_internal.h"

static bool fail(conf_json_t *j, const char *msg)
{
    j->err_at = j->p;
    j->err_msg = msg;
    return false;
}

void conf_json_ws(conf_json_t *j)
{
    while (j->p < j->end) {
        char c = *j->p;
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
            j->p++;
        } else if (c == '#' && j->comments) {
            while (j->p < j->end && *j->p != '\n')
                j->p++;
        } else {
            break;
        }
    }
}

static bool is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static bool json_string(conf_json_t *j)
{
    j->p++; /* the opening quote */
    while (j->p < j->end) {
        unsigned char c = (unsigned char)*j->p;
        if (c == '"') {
            j->p++;
            return true;
        }
        /* A string cannot span lines in JSON; saying so beats "unterminated" 40 lines later. */
        if (c == '\n') return fail(j, "a JSON string must end on the line it starts");
        if (c < 0x20) return fail(j, "control character inside a JSON string");
        if (c == '\\') {
            j->p++;
            if (j->p >= j->end) break;
            c = (unsigned char)*j->p;
            if (c == 'u') {
                for (int i = 1; i <= 4; i++)
                    if (j->p + i >= j->end || !is_hex(j->p[i])) {
                        j->p += i;
                        return fail(j, "\\u must be followed by 4 hex digits");
                    }
                j->p += 4;
            } else if (c == '\0' || !strchr("\"\\/bfnrt", c)) {
                return fail(j, "invalid escape in a JSON string (use \\\" \\\\ \\/ \\b \\f \\n "
                               "\\r \\t or \\uXXXX)");
            }
        }
        j->p++;
    }
    j->p = j->end;
    return fail(j, "unterminated JSON string");
}

static bool digits(conf_json_t *j)
{
    const char *start = j->p;
    while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
        j->p++;
    return j->p > start;
}

static bool json_number(conf_json_t *j)
{
    if (*j->p == '-') j->p++;
    if (j->p < j->end && *j->p == '0') {
        j->p++;
    } else if (!digits(j)) {
        return fail(j, "expected a digit");
    }
    if (j->p < j->end && *j->p == '.') {
        j->p++;
        if (!digits(j)) return fail(j, "expected a digit after '.'");
    }
    if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
        j->p++;
        if (j->p < j->end && (*j->p == '+' || *j->p == '-')) j->p++;
        if (!digits(j)) return fail(j, "expected a digit in the exponent");
    }
    return true;
}

static const char expected_value[] = "expected a value (a \"string\", a number, true, false, "
                                     "null, [...] or {...}); strings need double quotes in JSON";

static bool json_word(conf_json_t *j, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(j->end - j->p) < n || memcmp(j->p, word, n) != 0) return fail(j, expected_value);
    j->p += n;
    return true;
}

/* The shared loop of arrays and objects: `close` ends it, ',' separates members. */
static bool json_members(conf_json_t *j, int depth, char close)
{
    const char *sep_msg = close == ']' ? "expected ',' or ']' in the JSON array"
                                       : "expected ',' or '}' in the JSON hash";
    j->p++; /* the opening bracket */
    conf_json_ws(j);
    if (j->p < j->end && *j->p == close) {
        j->p++;
        return true;
    }
    for (;;) {
        if (close == '}') {
            if (j->p >= j->end) return fail(j, "unterminated JSON hash");
            if (*j->p != '"') return fail(j, "expected a \"key\" in the JSON hash");
            if (!json_string(j)) return false;
            conf_json_ws(j);
            if (j->p >= j->end) return fail(j, "unterminated JSON hash");
            if (*j->p != ':') return fail(j, "expected ':' after the key in the JSON hash");
            j->p++;
            conf_json_ws(j);
        }
        if (!conf_json_value(j, depth + 1)) return false;
        conf_json_ws(j);
        if (j->p >= j->end) return fail(j, sep_msg);
        if (*j->p == close) {
            j->p++;
            return true;
        }
        if (*j->p != ',') return fail(j, sep_msg);
        j->p++;
        conf_json_ws(j);
    }
}

bool conf_json_value(conf_json_t *j, int depth)
{
    if (j->p >= j->end) return fail(j, "expected a value");
    switch (*j->p) {
    case '[':
    case '{':
        if (depth >= CONF_JSON_MAX_DEPTH) return fail(j, "JSON nested too deep (limit 64)");
        return json_members(j, depth, *j->p == '[' ? ']' : '}');
    case '"':
        return json_string(j);
    case 't':
        return json_word(j, "true");
    case 'f':
        return json_word(j, "false");
    case 'n':
        return json_word(j, "null");
    default:
        if (*j->p == '-' || (*j->p >= '0' && *j->p <= '9')) return json_number(j);
        return fail(j, expected_value);
    }
}

static int hex4(const char *p)
{
    int v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        int d = c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
        v = v * 16 + d;
    }
    return v;
}

static void put_utf8(weir_buf_t *out, unsigned cp)
{
    char b[4];
    size_t n;
    if (cp < 0x80) {
        b[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        b[0] = (char)(0xc0 | (cp >> 6));
        b[1] = (char)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        b[0] = (char)(0xe0 | (cp >> 12));
        b[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        b[2] = (char)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        b[0] = (char)(0xf0 | (cp >> 18));
        b[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
        b[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
        b[3] = (char)(0x80 | (cp & 0x3f));
        n = 4;
    }
    weir_buf_append(out, b, n);
}

/* Reads the \uXXXX at p (on the backslash), joining a surrogate pair; a lone surrogate becomes
 * U+FFFD as most JSON decoders do. Returns the bytes consumed. */
static size_t decode_u(const char *p, const char *end, unsigned *cp)
{
    unsigned hi = (unsigned)hex4(p + 2);
    *cp = hi;
    if (hi >= 0xdc00 && hi <= 0xdfff) *cp = 0xfffd;
    if (hi < 0xd800 || hi > 0xdbff) return 6;
    if (end - p >= 12 && p[6] == '\\' && p[7] == 'u') {
        unsigned lo = (unsigned)hex4(p + 8);
        if (lo >= 0xdc00 && lo <= 0xdfff) {
            *cp = 0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00);
            return 12;
        }
    }
    *cp = 0xfffd;
    return 6;
}

bool conf_json_decode_string(const char *p, const char *end, weir_buf_t *out)
{
    p++; /* the opening quote */
    while (p < end && *p != '"') {
        if (*p != '\\') {
            weir_buf_putc(out, *p++);
            continue;
        }
        char c = p[1];
        if (c == 'u') {
            unsigned cp;
            p += decode_u(p, end, &cp);
            if (cp == 0) return false;
            put_utf8(out, cp);
            continue;
        }
        static const char from[] = "bfnrt", to[] = "\b\f\n\r\t";
        const char *k = c ? strchr(from, c) : NULL;
        weir_buf_putc(out, k ? to[k - from] : c); /* \" \\ \/ stand for themselves */
        p += 2;
    }
    weir_buf_putc(out, '\0');
    out->len--;
    return true;
}
