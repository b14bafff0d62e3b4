/* SPDX-License-Identifier: BSD-3-Clause */
/* cleanup.c - removes what the bench wrote, once its runs are over: every
 * Redis key under its prefix (found by SCAN on each server, each node of
 * the cluster too) and its MySQL tables. `--keep` skips it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mysql.h>
#include <volley.h>

#include "bench.h"

/* Waits for f and returns its status; the future stays the caller's. */
static int bench_clean_wait(vl_loop *loop, vl_future *f)
{
    return f ? vl_loop_run_until(loop, f) : VL_ENOMEM;
}

/* Whether the server behind c is a replica (ROLE says "slave"): a replica
 * refuses writes, and its primary's DEL reaches it anyway. */
static int bench_clean_is_replica(vl_loop *loop, vl_redis *c)
{
    vl_future *f = vl_redis_command(c, "ROLE");
    int replica = 0;
    if (bench_clean_wait(loop, f) == VL_OK) {
        const vl_redis_reply *r = vl_future_redis_reply(f);
        const char *s = vl_redis_reply_str(vl_redis_reply_element(r, 0), NULL);
        replica = s != NULL && strcmp(s, "slave") == 0;
    }
    vl_future_free(f);
    return replica;
}

/* UNLINKs the keys of one SCAN reply page, one key per command (keys of
 * different slots cannot share one on a cluster node), every reply
 * awaited. Returns how many, or -1. */
static long bench_clean_page(vl_loop *loop, vl_redis *c, const vl_redis_reply *keys)
{
    size_t n = vl_redis_reply_count(keys);
    vl_future **fs = n ? calloc(n, sizeof *fs) : NULL;
    if (n == 0)
        return 0;
    if (fs == NULL)
        return -1;
    for (size_t k = 0; k < n; k++) {
        size_t len;
        const char *key = vl_redis_reply_str(vl_redis_reply_element(keys, k), &len);
        const char *argv[2] = {"UNLINK", key};
        size_t lens[2] = {6, len};
        fs[k] = key ? vl_redis_command_argv(c, 2, argv, lens) : NULL;
        if (fs[k] == NULL) {
            while (k-- > 0)
                vl_future_free(fs[k]);
            free(fs);
            return -1;
        }
    }
    vl_future *all = vl_future_all(loop, fs, n);
    int st = bench_clean_wait(loop, all);
    vl_future_free(all);
    free(fs);
    return st == VL_OK ? (long)n : -1;
}

/* SCANs the server at url for the bench's keys and removes them. Returns
 * how many it removed, or -1 with why. */
static long bench_clean_url(const char *url, char *why, size_t cap)
{
    vl_loop *loop = vl_loop_new();
    vl_redis *c = loop ? vl_redis_new(loop, url, NULL) : NULL;
    long removed = -1;
    char cursor[32] = "0";
    snprintf(why, cap, "out of memory");
    if (c == NULL)
        goto out;
    if (bench_clean_is_replica(loop, c)) {
        removed = 0;
        goto out;
    }
    removed = 0;
    do {
        vl_future *f = vl_redis_command(c, "SCAN %s MATCH bench:* COUNT 1000", cursor);
        if (bench_clean_wait(loop, f) != VL_OK) {
            snprintf(why, cap, "SCAN: %s", f ? vl_future_error(f) : "out of memory");
            vl_future_free(f);
            removed = -1;
            break;
        }
        const vl_redis_reply *r = vl_future_redis_reply(f);
        size_t len = 0;
        const char *next = vl_redis_reply_str(vl_redis_reply_element(r, 0), &len);
        long n = bench_clean_page(loop, c, vl_redis_reply_element(r, 1));
        snprintf(cursor, sizeof cursor, "%.*s", next ? (int)len : 1, next ? next : "0");
        vl_future_free(f);
        if (n < 0) {
            snprintf(why, cap, "UNLINK failed");
            removed = -1;
            break;
        }
        removed += n;
    } while (strcmp(cursor, "0") != 0);
out:
    vl_redis_free(c);
    if (loop)
        vl_loop_free(loop);
    return removed;
}

/* The node URLs of a cluster URL redis+cluster://h:p,h:p,... (every node
 * a seed), one at a time: fills url with redis://h:p for the k-th. Returns
 * 0, or -1 when there is no k-th. */
static int bench_clean_cluster_node(const char *cluster_url, int k, char *url, size_t cap)
{
    const char *s = strstr(cluster_url, "://");
    if (s == NULL)
        return -1;
    s += 3;
    for (int i = 0; i < k; i++) {
        s = strchr(s, ',');
        if (s == NULL)
            return -1;
        s++;
    }
    size_t len = strcspn(s, ",/?");
    if (len == 0)
        return -1;
    snprintf(url, cap, "redis://%.*s", (int)len, s);
    return 0;
}

static int bench_clean_one(const char *url, const char *what, long *total)
{
    char why[300];
    long n = bench_clean_url(url, why, sizeof why);
    if (n < 0) {
        fprintf(stderr, "volley-bench: cleanup of %s: %s\n", what, why);
        return -1;
    }
    *total += n;
    return 0;
}

static int bench_clean_mysql(const bench_env *e)
{
    static const char *const sql[] = {"DROP TABLE IF EXISTS bench_kv, bench_ins",
                                      "DROP DATABASE IF EXISTS volley_bench_slap"};
    MYSQL *m = bench_mysql_connect(e, 0);
    int rc = 0;
    if (m == NULL)
        return -1;
    for (size_t k = 0; k < sizeof sql / sizeof sql[0]; k++)
        if (mysql_query(m, sql[k]) != 0) {
            fprintf(stderr, "volley-bench: cleanup: %s: %s\n", sql[k], mysql_error(m));
            rc = -1;
        }
    mysql_close(m);
    return rc;
}

int bench_cleanup(const bench_env *e, const bench_cleanup_what *w)
{
    char url[2048];
    long keys = 0;
    int rc = 0;
    for (int h = 0; w->redis && h < e->nredis; h++) {
        bench_redis_url(e, 0, e->redis_ports[h], url, sizeof url);
        rc |= bench_clean_one(url, "a Redis server", &keys);
    }
    if (w->tls) {
        bench_redis_url(e, 1, e->redis_tls_port, url, sizeof url);
        rc |= bench_clean_one(url, "the TLS Redis server", &keys);
    }
    for (int k = 0; w->cluster && bench_clean_cluster_node(e->cluster_url, k, url,
                                                           sizeof url) == 0; k++)
        rc |= bench_clean_one(url, "a cluster node", &keys);
    if (w->mysql && bench_clean_mysql(e) != 0)
        rc = -1;
    if (!w->quiet)
        fprintf(stderr, "volley-bench: cleanup: removed %ld keys (bench:*)%s\n", keys,
                w->mysql ? " and dropped bench_kv, bench_ins" : "");
    return rc == 0 ? 0 : -1;
}
