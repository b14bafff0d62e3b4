/* SPDX-License-Identifier: BSD-3-Clause */
/* workload.c - what each request sends and what its reply must be, and the
 * data every scenario reads, written before any timed run. */
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis.h>
#include <mysql.h>

#include "bench.h"

/* The keys and values of every request are built with bench_put_u, in
 * every mode alike, so it stays cheap: snprintf cost more per request than
 * volley's whole layer. */
size_t bench_put_u(char *dst, size_t v)
{
    char tmp[24];
    size_t n = 0, i;

    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    for (i = 0; i < n; i++)
        dst[i] = tmp[n - 1 - i];
    return n;
}

/* The value of key k, or of field f of hash k: a readable prefix padded to
 * data_size with a letter that depends on k, so a reply for the wrong key
 * never passes. */
size_t bench_value(const bench_env *e, size_t k, int f, char *buf)
{
    size_t len = 0;

    buf[len++] = f < 0 ? 'v' : 'h';
    len += bench_put_u(buf + len, k);
    if (f >= 0) {
        buf[len++] = 'f';
        len += bench_put_u(buf + len, (size_t)f);
    }
    char pad = (char)('a' + k % 26);
    while (len < e->data_size)
        buf[len++] = pad;
    buf[len] = '\0';
    return len;
}

size_t bench_redis_store_size(const bench_env *e)
{
    return BENCH_MAX_ARGS * (e->data_size + 64);
}

static size_t bench_key(char *buf, const char *prefix, size_t k)
{
    size_t n = strlen(prefix), len;

    memcpy(buf, "bench:", 6);
    memcpy(buf + 6, prefix, n);
    buf[6 + n] = ':';
    len = 7 + n + bench_put_u(buf + 7 + n, k);
    buf[len] = '\0';
    return len;
}

int bench_redis_argv(const bench_env *e, int op, uint64_t i, const char **argv, size_t *lens,
                     char *store)
{
    size_t slot = e->data_size + 64;
    size_t k;
    switch (op) {
    case BENCH_OP_GET:
        k = (size_t)(i % e->keys);
        argv[0] = "GET";
        lens[0] = 3;
        argv[1] = store;
        lens[1] = bench_key(store, "k", k);
        return 2;
    case BENCH_OP_SET:
        k = (size_t)(i % e->keys);
        argv[0] = "SET";
        lens[0] = 3;
        argv[1] = store;
        lens[1] = bench_key(store, "k", k);
        argv[2] = store + slot;
        lens[2] = bench_value(e, k, -1, store + slot);
        return 3;
    case BENCH_OP_HASH:
        k = (size_t)((i / 2) % e->keys);
        argv[1] = store;
        lens[1] = bench_key(store, "h", k);
        if (i % 2 == 0) {
            argv[0] = "HSET";
            lens[0] = 4;
            argv[2] = "f0";
            lens[2] = 2;
            argv[3] = store + slot;
            lens[3] = bench_value(e, k, 0, store + slot);
            return 4;
        }
        argv[0] = "HGETALL";
        lens[0] = 7;
        return 2;
    default:
        return 0;
    }
}

static atomic_uint bench_reported;

/* Only the first few failures are printed: a broken server would otherwise
 * print a million lines. */
static int bench_may_report(void)
{
    return atomic_fetch_add(&bench_reported, 1) < 10;
}

void bench_fail(const char *mode, uint64_t i, const char *what, const char *msg)
{
    if (bench_may_report())
        fprintf(stderr, "volley-bench: %s: request %" PRIu64 ": %s: %s\n", mode, i, what,
                msg ? msg : "");
}

void bench_oom(const char *mode)
{
    fprintf(stderr, "volley-bench: %s: out of memory\n", mode);
    abort();
}

static int bench_mismatch(const char *mode, uint64_t i, const char *expected, const char *got,
                          size_t got_len)
{
    if (bench_may_report())
        fprintf(stderr,
                "volley-bench: %s: request %" PRIu64 ": wrong reply: expected \"%s\", got \"%.*s\"\n",
                mode, i, expected, (int)(got_len > 80 ? 80 : got_len), got ? got : "(none)");
    return -1;
}

static const char *bench_rtype(int t)
{
    static const char *const names[] = {"?", "string", "array", "integer", "nil", "status",
                                        "error"};
    return t >= 0 && t <= BENCH_R_ERROR ? names[t] : "?";
}

static int bench_type_mismatch(const char *mode, uint64_t i, int want, const bench_rreply *r)
{
    if (bench_may_report())
        fprintf(stderr, "volley-bench: %s: request %" PRIu64 ": expected a %s reply, got %s%s%.*s\n",
                mode, i, bench_rtype(want), bench_rtype(r->type), r->str ? " " : "",
                (int)(r->len > 120 ? 120 : r->len), r->str ? r->str : "");
    return -1;
}

int bench_redis_check(const bench_env *e, int op, uint64_t i, const bench_rreply *r,
                      const char *mode)
{
    char want[1024 + 64];
    char *big = want;
    size_t k, n;
    int rc = 0;
    if (e->data_size + 64 > sizeof want) {
        big = malloc(e->data_size + 64);
        if (big == NULL)
            return -1;
    }
    switch (op) {
    case BENCH_OP_GET:
        k = (size_t)(i % e->keys);
        n = bench_value(e, k, -1, big);
        if (r->type != BENCH_R_STRING)
            rc = bench_type_mismatch(mode, i, BENCH_R_STRING, r);
        else if (r->len != n || memcmp(r->str, big, n) != 0)
            rc = bench_mismatch(mode, i, big, r->str, r->len);
        break;
    case BENCH_OP_SET:
        if (r->type != BENCH_R_STATUS)
            rc = bench_type_mismatch(mode, i, BENCH_R_STATUS, r);
        else if (r->len != 2 || memcmp(r->str, "OK", 2) != 0)
            rc = bench_mismatch(mode, i, "OK", r->str, r->len);
        break;
    case BENCH_OP_HASH:
        k = (size_t)((i / 2) % e->keys);
        if (i % 2 == 0) {
            /* The field exists already with this value: HSET adds nothing. */
            if (r->type != BENCH_R_INTEGER)
                rc = bench_type_mismatch(mode, i, BENCH_R_INTEGER, r);
            else if (r->integer != 0)
                rc = bench_mismatch(mode, i, "0", "nonzero", 7);
            break;
        }
        if (r->type != BENCH_R_ARRAY) {
            rc = bench_type_mismatch(mode, i, BENCH_R_ARRAY, r);
            break;
        }
        if (r->count != 2 * BENCH_MAX_HASH_FIELDS) {
            rc = bench_mismatch(mode, i, "8 elements", "another count", 13);
            break;
        }
        /* Redis returns a small hash in insertion order, but the check does
         * not rely on it: each field is looked up by name. */
        for (int f = 0; f < BENCH_MAX_HASH_FIELDS && rc == 0; f++) {
            char field[8];
            size_t fl = (size_t)snprintf(field, sizeof field, "f%d", f);
            n = bench_value(e, k, f, big);
            int found = 0;
            for (size_t j = 0; j + 1 < r->count; j += 2) {
                if (r->el[j] && r->el_len[j] == fl && memcmp(r->el[j], field, fl) == 0) {
                    found = 1;
                    if (r->el[j + 1] == NULL || r->el_len[j + 1] != n ||
                        memcmp(r->el[j + 1], big, n) != 0)
                        rc = bench_mismatch(mode, i, big, r->el[j + 1], r->el_len[j + 1]);
                }
            }
            if (!found)
                rc = bench_mismatch(mode, i, field, "(missing field)", 15);
        }
        break;
    default:
        rc = -1;
    }
    if (big != want)
        free(big);
    return rc;
}

void bench_env_sleep(bench_env *e)
{
    /* Made once per run from a flag: the statement carries no request
     * value, so it stays a text query. */
    snprintf(e->sleep_sql, sizeof e->sleep_sql, "SELECT SLEEP(%u.%03u)", e->sleep_ms / 1000,
             e->sleep_ms % 1000);
}

int bench_mysql_prepared(int op)
{
    return op == BENCH_OP_POINT || op == BENCH_OP_INSERT;
}

void bench_mysql_req(const bench_env *e, int op, uint64_t i, bench_mreq *q)
{
    q->nparams = 0;
    q->id = 0;
    q->v_len = 0;
    q->v[0] = '\0';
    switch (op) {
    case BENCH_OP_SELECT1:
        q->sql = "SELECT 1";
        break;
    case BENCH_OP_POINT:
        q->sql = BENCH_SQL_POINT;
        q->nparams = 1;
        q->id = (int64_t)(i % e->rows) + 1;
        break;
    case BENCH_OP_INSERT:
        q->sql = BENCH_SQL_INSERT;
        q->nparams = 2;
        q->id = (int64_t)i;
        q->v[0] = 'i';
        q->v_len = 1 + bench_put_u(q->v + 1, (size_t)i);
        q->v[q->v_len] = '\0';
        break;
    case BENCH_OP_SLEEP:
        q->sql = e->sleep_sql;
        break;
    default:
        q->sql = "";
    }
}

int bench_mysql_int(const char *s, size_t len, int64_t *out)
{
    uint64_t v = 0;
    size_t j = 0;
    int neg = 0;
    if (len > 0 && s[0] == '-')
        neg = 1, j = 1;
    if (j == len || len - j > 18)
        return -1; /* 18 digits never overflow; the bench reads small numbers */
    for (; j < len; j++) {
        if (s[j] < '0' || s[j] > '9')
            return -1;
        v = v * 10 + (uint64_t)(s[j] - '0');
    }
    *out = neg ? -(int64_t)v : (int64_t)v;
    return 0;
}

/* The value of row id of bench_kv into buf (at least 32 bytes): "row<id>-"
 * and a letter that depends on id. Returns its length. The check builds it
 * for every point select, so it is written without snprintf. */
static size_t bench_row_value(uint64_t id, char *buf)
{
    size_t n = 3;
    memcpy(buf, "row", 3);
    n += bench_put_u(buf + n, (size_t)id);
    buf[n++] = '-';
    buf[n++] = (char)('a' + (id * 7) % 26);
    buf[n] = '\0';
    return n;
}

static int bench_int_mismatch(const char *mode, uint64_t i, int64_t want, const bench_mreply *r)
{
    if (bench_may_report()) {
        if (r->has_c0)
            fprintf(stderr, "volley-bench: %s: request %" PRIu64 ": wrong reply: expected %" PRId64
                            ", got %" PRId64 "\n", mode, i, want, r->c0);
        else
            fprintf(stderr, "volley-bench: %s: request %" PRIu64 ": wrong reply: expected %" PRId64
                            ", got no integer\n", mode, i, want);
    }
    return -1;
}

int bench_mysql_check(const bench_env *e, int op, uint64_t i, const bench_mreply *r,
                      const char *mode)
{
    char want[32];
    size_t n;
    int64_t id;
    switch (op) {
    case BENCH_OP_SELECT1:
    case BENCH_OP_SLEEP:
        if (r->rows != 1 || r->cols != 1)
            return bench_mismatch(mode, i, "one row, one column", "another shape", 13);
        if (!r->has_c0 || r->c0 != (op == BENCH_OP_SLEEP ? 0 : 1))
            return bench_int_mismatch(mode, i, op == BENCH_OP_SLEEP ? 0 : 1, r);
        return 0;
    case BENCH_OP_POINT:
        id = (int64_t)(i % e->rows) + 1;
        if (r->rows != 1 || r->cols != 2)
            return bench_mismatch(mode, i, "one row, two columns", "another shape", 13);
        if (!r->has_c0 || r->c0 != id)
            return bench_int_mismatch(mode, i, id, r);
        n = bench_row_value((uint64_t)id, want);
        if (r->c1 == NULL || r->c1_len != n || memcmp(r->c1, want, n) != 0)
            return bench_mismatch(mode, i, want, r->c1 ? r->c1 : "(none)",
                                  r->c1 ? r->c1_len : 6);
        return 0;
    case BENCH_OP_INSERT:
        if (r->rows != 0 || r->cols != 0 || r->affected != 1)
            return bench_mismatch(mode, i, "1 affected row", "another count", 13);
        return 0;
    default:
        return -1;
    }
}

/* ---- Setup ---- */

int bench_redis_setup(const bench_env *e, int port)
{
    redisContext *c = redisConnect(e->redis_host, port);
    char key[48], val[1024 + 64];
    char *v = val;
    int rc = 0;
    if (c == NULL || c->err) {
        fprintf(stderr, "volley-bench: setup: connect %s:%d: %s\n", e->redis_host, port,
                c ? c->errstr : "out of memory");
        if (c)
            redisFree(c);
        return -1;
    }
    if (e->data_size + 64 > sizeof val && (v = malloc(e->data_size + 64)) == NULL) {
        redisFree(c);
        return -1;
    }
    /* Pipelined in batches: setup must be quick even for a big keyspace. */
    size_t batch = 1000;
    for (size_t k0 = 0; k0 < e->keys && rc == 0; k0 += batch) {
        size_t end = k0 + batch < e->keys ? k0 + batch : e->keys;
        size_t sent = 0;
        for (size_t k = k0; k < end; k++) {
            const char *argv[2 + 2 * BENCH_MAX_HASH_FIELDS];
            size_t lens[2 + 2 * BENCH_MAX_HASH_FIELDS];
            char vals[BENCH_MAX_HASH_FIELDS][1024 + 64];
            char fields[BENCH_MAX_HASH_FIELDS][8];
            argv[0] = "SET";
            lens[0] = 3;
            argv[1] = key;
            lens[1] = bench_key(key, "k", k);
            argv[2] = v;
            lens[2] = bench_value(e, k, -1, v);
            redisAppendCommandArgv(c, 3, argv, lens);
            sent++;
            if (e->data_size + 64 <= sizeof vals[0]) {
                char hkey[48];
                argv[0] = "HSET";
                lens[0] = 4;
                argv[1] = hkey;
                lens[1] = bench_key(hkey, "h", k);
                for (int f = 0; f < BENCH_MAX_HASH_FIELDS; f++) {
                    lens[2 + 2 * f] = (size_t)snprintf(fields[f], sizeof fields[f], "f%d", f);
                    argv[2 + 2 * f] = fields[f];
                    lens[3 + 2 * f] = bench_value(e, k, f, vals[f]);
                    argv[3 + 2 * f] = vals[f];
                }
                /* DEL first so that a hash left over from another data size
                 * has no stale field. */
                redisAppendCommand(c, "DEL %s", hkey);
                redisAppendCommandArgv(c, 2 + 2 * BENCH_MAX_HASH_FIELDS, argv, lens);
                sent += 2;
            }
        }
        for (size_t j = 0; j < sent; j++) {
            redisReply *r = NULL;
            if (redisGetReply(c, (void **)&r) != REDIS_OK || r == NULL ||
                r->type == REDIS_REPLY_ERROR) {
                fprintf(stderr, "volley-bench: setup on port %d: %s\n", port,
                        r ? r->str : c->errstr);
                rc = -1;
                if (r)
                    freeReplyObject(r);
                break;
            }
            freeReplyObject(r);
        }
    }
    if (v != val)
        free(v);
    redisFree(c);
    return rc;
}

MYSQL *bench_mysql_connect(const bench_env *e, int nonblock)
{
    MYSQL *m = mysql_init(NULL);
    if (m == NULL)
        return NULL;
    if (nonblock)
        mysql_options(m, MYSQL_OPT_NONBLOCK, 0);
    if (mysql_real_connect(m, e->mysql_host, e->mysql_user, e->mysql_password, e->mysql_db,
                           e->mysql_sock ? 0 : (unsigned)e->mysql_port, e->mysql_sock, 0) ==
        NULL) {
        fprintf(stderr, "volley-bench: mysql connect: %s\n", mysql_error(m));
        mysql_close(m);
        return NULL;
    }
    return m;
}

static int bench_sql(MYSQL *m, const char *sql)
{
    if (mysql_query(m, sql) != 0) {
        fprintf(stderr, "volley-bench: setup: %s: %s\n", sql, mysql_error(m));
        return -1;
    }
    MYSQL_RES *res = mysql_store_result(m);
    if (res)
        mysql_free_result(res);
    return 0;
}

/* Fills bench_kv with rows 1..e->rows, 1000 rows a statement, every value
 * bound to a marker of a prepared multi-row INSERT. Returns 0 or -1. */
static int bench_fill_kv(const bench_env *e, MYSQL *m)
{
    enum { BATCH = 1000 };
    static const char head[] = "INSERT INTO bench_kv (id, v) VALUES (?, ?)";
    char *sql = malloc(sizeof head + BATCH * 8);
    MYSQL_BIND *b = calloc(2 * BATCH, sizeof *b);
    int64_t *ids = calloc(BATCH, sizeof *ids);
    char(*vals)[32] = calloc(BATCH, sizeof *vals);
    unsigned long *lens = calloc(BATCH, sizeof *lens);
    MYSQL_STMT *st = NULL;
    size_t prepared = 0;
    int rc = -1;
    if (!sql || !b || !ids || !vals || !lens)
        goto out;
    for (size_t id0 = 1; id0 <= e->rows; id0 += BATCH) {
        size_t cnt = e->rows - id0 + 1 < BATCH ? e->rows - id0 + 1 : BATCH;
        if (cnt != prepared) {
            /* The markers of cnt rows; the last batch may be shorter. */
            size_t len = sizeof head - 1;
            memcpy(sql, head, len);
            for (size_t j = 1; j < cnt; j++) {
                memcpy(sql + len, ", (?, ?)", 8);
                len += 8;
            }
            if (st)
                mysql_stmt_close(st);
            st = mysql_stmt_init(m);
            if (st == NULL || mysql_stmt_prepare(st, sql, (unsigned long)len) != 0) {
                fprintf(stderr, "volley-bench: setup: prepare the fill: %s\n",
                        st ? mysql_stmt_error(st) : mysql_error(m));
                goto out;
            }
            prepared = cnt;
        }
        memset(b, 0, 2 * cnt * sizeof *b);
        for (size_t j = 0; j < cnt; j++) {
            ids[j] = (int64_t)(id0 + j);
            lens[j] = (unsigned long)bench_row_value((uint64_t)ids[j], vals[j]);
            b[2 * j].buffer_type = MYSQL_TYPE_LONGLONG;
            b[2 * j].buffer = &ids[j];
            b[2 * j + 1].buffer_type = MYSQL_TYPE_STRING;
            b[2 * j + 1].buffer = vals[j];
            b[2 * j + 1].buffer_length = lens[j];
            b[2 * j + 1].length = &lens[j];
        }
        if (mysql_stmt_bind_param(st, b) != 0 || mysql_stmt_execute(st) != 0) {
            fprintf(stderr, "volley-bench: setup: fill bench_kv: %s\n", mysql_stmt_error(st));
            goto out;
        }
    }
    rc = 0;
out:
    if (st)
        mysql_stmt_close(st);
    free(sql);
    free(b);
    free(ids);
    free(vals);
    free(lens);
    return rc;
}

int bench_mysql_setup(const bench_env *e)
{
    MYSQL *m = bench_mysql_connect(e, 0);
    int rc = -1;
    if (m == NULL)
        return -1;
    if (bench_sql(m, "CREATE TABLE IF NOT EXISTS bench_kv (id INT PRIMARY KEY, "
                     "v VARCHAR(64) NOT NULL) ENGINE=InnoDB") != 0 ||
        bench_sql(m, "CREATE TABLE IF NOT EXISTS bench_ins (id BIGINT AUTO_INCREMENT "
                     "PRIMARY KEY, k BIGINT NOT NULL, v VARCHAR(32) NOT NULL) ENGINE=InnoDB") != 0)
        goto out;
    /* The table is filled once; a count that does not match is refilled. */
    if (mysql_query(m, "SELECT COUNT(*), COALESCE(MAX(id), 0) FROM bench_kv") != 0)
        goto out;
    MYSQL_RES *res = mysql_store_result(m);
    MYSQL_ROW row = res ? mysql_fetch_row(res) : NULL;
    int filled = row && strtoull(row[0], NULL, 10) == e->rows && strtoull(row[1], NULL, 10) == e->rows;
    if (res)
        mysql_free_result(res);
    if (!filled) {
        if (bench_sql(m, "TRUNCATE TABLE bench_kv") != 0 || bench_sql(m, "BEGIN") != 0 ||
            bench_fill_kv(e, m) != 0)
            goto out;
        if (bench_sql(m, "COMMIT") != 0)
            goto out;
    }
    rc = bench_sql(m, "ANALYZE TABLE bench_kv");
out:
    mysql_close(m);
    return rc;
}

int bench_mysql_truncate_insert(const bench_env *e)
{
    MYSQL *m = bench_mysql_connect(e, 0);
    if (m == NULL)
        return -1;
    int rc = bench_sql(m, "TRUNCATE TABLE bench_ins");
    mysql_close(m);
    return rc;
}

int bench_mysql_check_insert(const bench_env *e, uint64_t n, const char *mode)
{
    /* Insert i wrote k = i, v = "i<i>": every k of 0..n-1 once, and no v
     * that differs from its k's. */
    static const char sql[] = "SELECT COUNT(*), COUNT(DISTINCT k), COALESCE(MIN(k), -1), "
                              "COALESCE(MAX(k), -1), COALESCE(SUM(v <> CONCAT('i', k)), 0) "
                              "FROM bench_ins";
    MYSQL *m = bench_mysql_connect(e, 0);
    unsigned long long got[5] = {0, 0, 0, 0, 0};
    long long lo = -2, hi = -2;
    int rc = -1;
    if (m == NULL)
        return -1;
    if (mysql_query(m, sql) == 0) {
        MYSQL_RES *res = mysql_store_result(m);
        MYSQL_ROW row = res ? mysql_fetch_row(res) : NULL;
        if (row && row[0] && row[1] && row[2] && row[3] && row[4]) {
            got[0] = strtoull(row[0], NULL, 10);
            got[1] = strtoull(row[1], NULL, 10);
            lo = strtoll(row[2], NULL, 10);
            hi = strtoll(row[3], NULL, 10);
            got[4] = strtoull(row[4], NULL, 10);
            rc = got[0] == n && got[1] == n && lo == 0 && hi == (long long)n - 1 && got[4] == 0
                     ? 0
                     : -1;
            if (rc != 0)
                fprintf(stderr, "volley-bench: %s: bench_ins has %llu rows (%llu distinct k, "
                                "%lld..%lld, %llu wrong v) after %" PRIu64 " inserts\n",
                        mode, got[0], got[1], lo, hi, got[4], n);
        }
        if (res)
            mysql_free_result(res);
    }
    if (rc != 0 && lo == -2)
        fprintf(stderr, "volley-bench: %s: checking bench_ins: %s\n", mode, mysql_error(m));
    /* The rows are the run's own: they go. */
    if (bench_sql(m, "TRUNCATE TABLE bench_ins") != 0)
        rc = -1;
    mysql_close(m);
    return rc;
}
