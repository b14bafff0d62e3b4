/* SPDX-License-Identifier: BSD-3-Clause */
/* tools/cli_render.c - how the volley CLI shows one host's outcome.
 *
 * Text: Redis replies look like redis-cli's ("(integer) 5", "(nil)",
 * "1) ..."), except that a printable bulk string is shown raw so that
 * multi-line replies such as INFO read line by line; a string with
 * unprintable bytes is quoted with escapes. SQL results are aligned tables
 * like the mysql client's. JSON: one object per host, typed values, built
 * with jansson so escaping is never hand-written.
 */
#include "cli.h"

#include <ctype.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

typedef struct buf {
    char *s;
    size_t len, cap;
    int oom;
} buf;

/* A buf that goes on from a malloc'd string (or NULL). */
static buf buf_of(char *s)
{
    size_t n = s != NULL ? strlen(s) : 0;
    buf b = {s, n, s != NULL ? n + 1 : 0, 0};

    return b;
}

static void put(buf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        char *p;
        while (cap < b->len + n + 1)
            cap *= 2;
        p = realloc(b->s, cap);
        if (p == NULL) {
            b->oom = 1;
            return;
        }
        b->s = p;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

static void putf(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(buf *b, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof(tmp)) {
        put(b, tmp, (size_t)n);
        return;
    }
    /* Longer than the scratch buffer (a wide table cell's padding). */
    {
        char *big = malloc((size_t)n + 1);
        if (big == NULL) {
            b->oom = 1;
            return;
        }
        va_start(ap, fmt);
        vsnprintf(big, (size_t)n + 1, fmt, ap);
        va_end(ap);
        put(b, big, (size_t)n);
        free(big);
    }
}

static int printable(const char *s, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 && c != '\n' && c != '\r' && c != '\t')
            return 0;
        if (c == 0x7f)
            return 0;
    }
    return 1;
}

static void put_quoted(buf *b, const char *s, size_t n)
{
    size_t i;

    put(b, "\"", 1);
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '\\': put(b, "\\\\", 2); break;
        case '"': put(b, "\\\"", 2); break;
        case '\n': put(b, "\\n", 2); break;
        case '\r': put(b, "\\r", 2); break;
        case '\t': put(b, "\\t", 2); break;
        default:
            if (c < 0x20 || c >= 0x7f)
                putf(b, "\\x%02x", c);
            else
                put(b, (const char *)&c, 1);
        }
    }
    put(b, "\"", 1);
}

/* Raw text without carriage returns (INFO ends its lines with \r\n). */
static void put_raw(buf *b, const char *s, size_t n)
{
    size_t i, start = 0;

    for (i = 0; i < n; i++) {
        if (s[i] == '\r') {
            put(b, s + start, i - start);
            start = i + 1;
        }
    }
    put(b, s + start, n - start);
    while (b->len > 0 && b->s[b->len - 1] == '\n')
        b->s[--b->len] = '\0';
}

/* The integer of a reply rendered as an INTEGER (the type was checked). */
static long long cli_reply_integer(const vl_redis_reply *r)
{
    long long v = 0;

    (void)vl_redis_reply_integer(r, &v);
    return v;
}

static void render_reply(buf *b, const vl_redis_reply *r, int indent)
{
    size_t n, i;
    const char *s;

    switch (vl_redis_reply_type(r)) {
    case VL_REDIS_STRING:
        s = vl_redis_reply_str(r, &n);
        if (printable(s, n) && indent == 0)
            put_raw(b, s, n);
        else
            put_quoted(b, s, n);
        break;
    case VL_REDIS_STATUS:
        s = vl_redis_reply_str(r, &n);
        put(b, s, n);
        break;
    case VL_REDIS_ERROR:
        s = vl_redis_reply_str(r, &n);
        put(b, "(error) ", 8);
        put(b, s, n);
        break;
    case VL_REDIS_INTEGER:
        putf(b, "(integer) %lld", cli_reply_integer(r));
        break;
    case VL_REDIS_NIL:
        put(b, "(nil)", 5);
        break;
    case VL_REDIS_ARRAY:
        n = vl_redis_reply_count(r);
        if (n == 0) {
            put(b, "(empty array)", 13);
            break;
        }
        for (i = 0; i < n; i++) {
            int w;
            char num[32];
            if (i > 0) {
                put(b, "\n", 1);
                putf(b, "%*s", indent, "");
            }
            w = snprintf(num, sizeof(num), "%zu) ", i + 1);
            put(b, num, (size_t)w);
            render_reply(b, vl_redis_reply_element(r, i), indent + w);
        }
        break;
    default:
        put(b, "(unknown reply)", 15);
    }
}

static void render_table(buf *b, const vl_mysql_result *res)
{
    size_t cols = vl_mysql_result_columns(res), rows = vl_mysql_result_rows(res), c, r;
    size_t *w;

    if (!vl_mysql_result_has_rows(res)) {
        putf(b, "Query OK, %llu row%s affected", (unsigned long long)vl_mysql_result_affected_rows(res),
             vl_mysql_result_affected_rows(res) == 1 ? "" : "s");
        if (vl_mysql_result_warnings(res) > 0)
            putf(b, ", %u warning%s", vl_mysql_result_warnings(res),
                 vl_mysql_result_warnings(res) == 1 ? "" : "s");
        put(b, "\n", 1);
        return;
    }
    w = calloc(cols ? cols : 1, sizeof(*w));
    if (w == NULL) {
        b->oom = 1;
        return;
    }
    for (c = 0; c < cols; c++) {
        w[c] = strlen(vl_mysql_result_column_name(res, c));
        for (r = 0; r < rows; r++) {
            size_t len = 4; /* NULL */
            if (!vl_mysql_result_is_null(res, r, c))
                vl_mysql_result_value(res, r, c, &len);
            if (len > w[c])
                w[c] = len;
        }
    }
#define RULE()                                                                           \
    do {                                                                                 \
        put(b, "+", 1);                                                                  \
        for (c = 0; c < cols; c++) {                                                     \
            size_t k;                                                                    \
            for (k = 0; k < w[c] + 2; k++)                                               \
                put(b, "-", 1);                                                          \
            put(b, "+", 1);                                                              \
        }                                                                                \
        put(b, "\n", 1);                                                                 \
    } while (0)
    RULE();
    put(b, "|", 1);
    for (c = 0; c < cols; c++)
        putf(b, " %-*s |", (int)w[c], vl_mysql_result_column_name(res, c));
    put(b, "\n", 1);
    RULE();
    for (r = 0; r < rows; r++) {
        put(b, "|", 1);
        for (c = 0; c < cols; c++) {
            size_t len;
            const char *v = vl_mysql_result_value(res, r, c, &len);
            put(b, " ", 1);
            if (v == NULL) {
                put(b, "NULL", 4);
                len = 4;
            } else {
                put(b, v, len);
            }
            putf(b, "%*s |", (int)(w[c] - len), "");
        }
        put(b, "\n", 1);
    }
    RULE();
#undef RULE
    putf(b, "%zu row%s in set\n", rows, rows == 1 ? "" : "s");
    free(w);
}

const char *cli_rec_word(int st)
{
    switch (st) {
    case VL_OK: return "ok";
    case VL_ESERVER: return "error";
    case VL_ETIMEDOUT: return "timeout";
    case CLI_INTERRUPTED: return "interrupted";
    case CLI_PENDING: return "pending";
    default: return "connect";
    }
}

/* The library's message names the host ("GET on redis://h:1: ..."); every
 * line of ours names it already, so it goes, with the " on " before it. */
static char *strip_host(const char *msg, const char *host)
{
    const char *at = host != NULL && host[0] != '\0' ? strstr(msg, host) : NULL;
    size_t n = strlen(msg), hl, pre;
    char *out;

    if (at == NULL)
        return strdup(msg);
    hl = strlen(host);
    pre = (size_t)(at - msg);
    if (pre >= 4 && strncmp(at - 4, " on ", 4) == 0)
        pre -= 4;
    else if (pre >= 1 && at[-1] == ' ')
        pre -= 1;
    out = malloc(n + 1);
    if (out == NULL)
        return NULL;
    memcpy(out, msg, pre);
    memcpy(out + pre, at + hl, n - (size_t)(at - msg) - hl + 1);
    return out;
}

/* Standard base64 (RFC 4648) of s[0, n). */
static json_t *base64_json(const char *s, size_t n)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = malloc(4 * ((n + 2) / 3) + 1);
    size_t i, o = 0;
    json_t *j;

    if (out == NULL)
        return NULL;
    for (i = 0; i < n; i += 3) {
        unsigned v = (unsigned)(unsigned char)s[i] << 16;
        v |= (i + 1 < n ? (unsigned char)s[i + 1] : 0u) << 8;
        v |= i + 2 < n ? (unsigned char)s[i + 2] : 0u;
        out[o++] = tab[(v >> 18) & 63];
        out[o++] = tab[(v >> 12) & 63];
        out[o++] = i + 1 < n ? tab[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? tab[v & 63] : '=';
    }
    out[o] = '\0';
    j = json_string(out);
    free(out);
    return j;
}

/* Bytes as JSON: a string when they are UTF-8, else {"encoding":"base64",
 * "value":"..."}, so that no byte is lost or invented. With b64 non-NULL
 * the caller marks base64 itself (a top-level reply): the bare string
 * comes back and *b64 is set. */
static json_t *bytes_json(const char *s, size_t n, int *b64)
{
    json_t *v = json_stringn(s, n), *o;

    if (v != NULL)
        return v;
    v = base64_json(s, n);
    if (b64 != NULL) {
        *b64 = 1;
        return v;
    }
    o = json_object();
    json_object_set_new(o, "encoding", json_string("base64"));
    json_object_set_new(o, "value", v);
    return o;
}

/* A reply as JSON. An error reply is {"error": text}, so that it never
 * reads as a string the server stored. */
static json_t *reply_json(const vl_redis_reply *r, int *b64)
{
    size_t n, i;
    const char *s;
    json_t *a;

    switch (vl_redis_reply_type(r)) {
    case VL_REDIS_STRING:
    case VL_REDIS_STATUS:
        s = vl_redis_reply_str(r, &n);
        return bytes_json(s, n, b64);
    case VL_REDIS_ERROR:
        s = vl_redis_reply_str(r, &n);
        a = json_object();
        json_object_set_new(a, "error", bytes_json(s, n, NULL));
        return a;
    case VL_REDIS_INTEGER:
        return json_integer(cli_reply_integer(r));
    case VL_REDIS_NIL:
        return json_null();
    case VL_REDIS_ARRAY:
        a = json_array();
        n = vl_redis_reply_count(r);
        for (i = 0; i < n && a != NULL; i++)
            json_array_append_new(a, reply_json(vl_redis_reply_element(r, i), NULL));
        return a;
    }
    return json_null();
}

static json_t *cell_json(const vl_mysql_result *res, size_t row, size_t col)
{
    size_t len;
    const char *v = vl_mysql_result_value(res, row, col, &len);
    int type = vl_mysql_result_column_type(res, col);

    if (v == NULL)
        return json_null();
    switch (type) {
    case VL_MYSQL_TINY: case VL_MYSQL_SHORT: case VL_MYSQL_INT24: case VL_MYSQL_LONG:
    case VL_MYSQL_LONGLONG: case VL_MYSQL_YEAR: {
        int64_t i64;
        if (vl_mysql_result_int64(res, row, col, &i64) == VL_OK)
            return json_integer((json_int_t)i64);
        break; /* a uint64 above INT64_MAX stays a string */
    }
    case VL_MYSQL_FLOAT: case VL_MYSQL_DOUBLE: {
        double d;
        if (vl_mysql_result_double(res, row, col, &d) == VL_OK)
            return json_real(d);
        break;
    }
    default:
        break;
    }
    return bytes_json(v, len, NULL);
}

static json_t *result_json(const vl_mysql_result *res)
{
    json_t *o = json_object(), *cols = json_array(), *rows = json_array();
    size_t c, row, nc = vl_mysql_result_columns(res), nr = vl_mysql_result_rows(res);

    for (c = 0; c < nc; c++)
        json_array_append_new(cols, json_string(vl_mysql_result_column_name(res, c)));
    for (row = 0; row < nr; row++) {
        json_t *jr = json_array();
        for (c = 0; c < nc; c++)
            json_array_append_new(jr, cell_json(res, row, c));
        json_array_append_new(rows, jr);
    }
    json_object_set_new(o, "columns", cols);
    json_object_set_new(o, "rows", rows);
    if (!vl_mysql_result_has_rows(res))
        json_object_set_new(o, "affected_rows",
                            json_integer((json_int_t)vl_mysql_result_affected_rows(res)));
    return o;
}

/* Host i's Redis replies into b and rec->json. */
static void add_replies(cli_rec *rec, buf *b, const vl_fanout_result *r, size_t i, int batch)
{
    size_t k, bs = vl_fanout_batch_size(r);

    for (k = 0; k < (bs > 0 ? bs : 1); k++) {
        const vl_redis_reply *reply = bs > 0 ? vl_fanout_redis_reply_at(r, i, k)
                                             : vl_fanout_redis_reply(r, i);
        int b64 = 0;
        json_t *j;
        if (reply == NULL)
            continue;
        render_reply(b, reply, 0);
        put(b, "\n", 1);
        j = reply_json(reply, batch ? NULL : &b64);
        if (batch)
            json_array_append_new(rec->json, j);
        else if (b64) {
            json_object_set_new(rec->json, "reply", j);
            json_object_set_new(rec->json, "encoding", json_string("base64"));
        } else if (vl_redis_reply_type(reply) != VL_REDIS_ERROR)
            /* An error reply is the entry's "error", not a reply too. */
            json_object_set_new(rec->json, "reply", j);
        else
            json_decref(j);
        rec->replies++;
    }
}

/* A first failure: its status, message without the host, MySQL codes. */
static void add_failure(cli_rec *rec, buf *b, const vl_fanout_result *r, size_t i,
                        int said)
{
    int st = vl_fanout_status(r, i);

    rec->status = st;
    rec->error = strip_host(vl_fanout_error(r, i), vl_fanout_host(r, i));
    rec->my_errno = vl_fanout_mysql_errno(r, i);
    snprintf(rec->sqlstate, sizeof(rec->sqlstate), "%s", vl_fanout_mysql_sqlstate(r, i));
    if (!said)
        putf(b, "(%s) %s\n", cli_rec_word(st), rec->error != NULL ? rec->error : "?");
}

int cli_rec_add(cli_rec *rec, const vl_fanout_result *r, size_t i, int batch)
{
    buf b = buf_of(rec->text);
    int st = vl_fanout_status(r, i), said = 0;
    const vl_mysql_result *res = vl_fanout_mysql_result(r, i);

    put(&b, "", 0);
    if (rec->json == NULL)
        rec->json = batch ? json_array() : json_object();
    rec->latency_ms += vl_fanout_latency_ms(r, i);
    if (vl_fanout_batch_size(r) > 0 || vl_fanout_redis_reply(r, i) != NULL) {
        /* A server error is an error reply among them: it says itself. */
        add_replies(rec, &b, r, i, batch);
        said = st == VL_ESERVER;
    } else if (st == VL_OK && res != NULL) {
        for (const vl_mysql_result *cur = res; cur != NULL; cur = vl_mysql_result_next(cur))
            render_table(&b, cur);
        json_t *rj = result_json(res);
        json_object_update(rec->json, rj);
        json_decref(rj);
    }
    if (st != VL_OK && (rec->status == CLI_PENDING || rec->status == VL_OK))
        add_failure(rec, &b, r, i, said);
    else if (rec->status == CLI_PENDING)
        rec->status = st;
    rec->text = b.s;
    return b.oom || rec->json == NULL ? -1 : 0;
}

char *cli_rec_json(const cli_rec *rec, const char *host)
{
    json_t *o = json_object(), *j = (json_t *)rec->json;
    char *text;

    if (o == NULL)
        return NULL;
    json_object_set_new(o, "host", json_string(host));
    json_object_set_new(o, "status", json_string(cli_rec_word(rec->status)));
    /* Microseconds are all a latency can claim; 15 digits print them
     * without binary noise (2.414, not 2.4140000000000001). */
    json_object_set_new(o, "latency_ms",
                        json_real((double)(long long)(rec->latency_ms * 1000.0 + 0.5) / 1000.0));
    if (j != NULL && json_is_array(j))
        json_object_set(o, "replies", j);
    else if (j != NULL)
        json_object_update(o, j);
    if (rec->error != NULL && rec->status != CLI_INTERRUPTED &&
        !(rec->status == VL_ESERVER && rec->my_errno == 0 && json_is_array(j))) {
        json_object_set_new(o, "error", json_string(rec->error));
        if (rec->my_errno != 0) {
            json_object_set_new(o, "errno", json_integer(rec->my_errno));
            json_object_set_new(o, "sqlstate", json_string(rec->sqlstate));
        }
    }
    text = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15));
    json_decref(o);
    return text;
}

void cli_rec_interrupt(cli_rec *rec)
{
    buf b = buf_of(rec->text);

    if (rec->final)
        return;
    rec->status = CLI_INTERRUPTED;
    put(&b, "(interrupted)\n", 14);
    rec->text = b.s; /* NULL only when out of memory: printed as "" then */
}

void cli_rec_free(cli_rec *rec)
{
    free(rec->text);
    free(rec->error);
    json_decref((json_t *)rec->json);
    memset(rec, 0, sizeof(*rec));
}
