/* SPDX-License-Identifier: BSD-3-Clause */
/* bench.h - shared types of volley-bench.
 *
 * volley-bench drives the same requests against the same servers in four
 * ways (modes) so that the cost of each layer shows:
 *   sync     one blocking connection per host, requests one after another
 *   threads  N threads, each with its own blocking connections
 *   async    volley futures on one loop, `window` requests in flight
 *   raw      the same async load without volley: for Redis a non-blocking
 *            socket, hiredis's reply reader (redisReader) and libev; for
 *            MySQL Connector/C's non-blocking API and libev
 * Every reply is checked against the value the request must return.
 */
#ifndef BENCH_H
#define BENCH_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define BENCH_MAX_HOSTS 64
#define BENCH_MAX_HASH_FIELDS 4

enum bench_mode { BENCH_SYNC, BENCH_THREADS, BENCH_ASYNC, BENCH_RAW, BENCH_REF, BENCH_NMODES };
enum bench_backend { BENCH_REDIS, BENCH_MYSQL };
enum bench_kind { BENCH_KIND_CPU, BENCH_KIND_LATENCY, BENCH_KIND_SCALE, BENCH_KIND_MEMORY };

/* What one request does. Redis requests touch key (i % keys); MySQL point
 * selects read row (i % rows) + 1. */
enum bench_op {
    BENCH_OP_GET,     /* GET key, expect the value written at setup */
    BENCH_OP_SET,     /* SET key value (the same value again), expect +OK */
    BENCH_OP_HASH,    /* even i: HSET key f0 v0 (same value, expect 0);
                       * odd i: HGETALL key, expect every field and value */
    BENCH_OP_SELECT1, /* SELECT 1, expect one row "1" */
    BENCH_OP_POINT,   /* SELECT id, v FROM bench_kv WHERE id = ?, id bound */
    BENCH_OP_INSERT,  /* INSERT INTO bench_ins (k, v) VALUES (?, ?), both bound */
    BENCH_OP_SLEEP,   /* SELECT SLEEP(s), expect one row "0" */
    BENCH_OP_BULK     /* the insert's rows, `chunk` per call: vl_mysql_execute_bulk, or
                       * vl_mysql_execute row by row when chunk is 1; requests count rows */
};

/* The servers and the data shape, from flags and the environment. */
typedef struct bench_env {
    int redis_ports[BENCH_MAX_HOSTS];
    int nredis;
    char redis_host[64]; /* the plain servers' IPv4 address: 127.0.0.1, or --redis's */
    char mysql_host[64]; /* 127.0.0.1, or --mysql's */
    int mysql_port;
    const char *mysql_sock; /* NULL: TCP */
    const char *mysql_user;
    const char *mysql_password; /* never printed */
    const char *mysql_db;
    size_t keys;      /* Redis keyspace */
    size_t rows;      /* rows of bench_kv */
    size_t data_size; /* bytes per Redis value */
    unsigned sleep_ms; /* SELECT SLEEP */
    char sleep_sql[48]; /* its text, made once from sleep_ms (bench_env_sleep) */
    unsigned delay_ms; /* added round trip through the delaying proxy */
    int redis_tls_port;   /* the TLS redis-server (VL_TEST_REDIS_TLS_PORT); 0: none */
    char tls_cacert[512]; /* VL_TEST_TLS_DIR/ca.crt; "" when unset */
    int proxy_ports[BENCH_MAX_HOSTS]; /* 0 when no proxy runs */
    char cluster_url[1024]; /* VL_TEST_CLUSTER_URL; "" when unset */
    int verbose;
} bench_env;

/* One run: a scenario in one mode. */
typedef struct bench_case {
    char name[48];      /* scenario name, e.g. "redis-get" */
    int kind;           /* enum bench_kind */
    int backend;        /* enum bench_backend */
    int op;             /* enum bench_op */
    int mode;           /* enum bench_mode */
    int hosts;          /* Redis hosts used (MySQL: 1) */
    int conns;          /* connections in total over all hosts */
    int window;         /* requests in flight at most */
    int threads;        /* threads mode: thread count */
    int via_proxy;      /* connect through the delaying proxy */
    int tls;            /* rediss:// to the TLS server (async, redis-benchmark) */
    int no_pool;        /* async: plain connections even where a pool would be used */
    int chunk;          /* BENCH_OP_BULK: rows per call (1: row by row) */
    int cluster;        /* async: over the Redis Cluster (cluster.c); conns per node */
    int refresh;        /* cluster-refresh: refreshes back to back during the run */
    int loop_group;     /* loop-group: 1 the one-loop row, 2 the group row; else 0 */
    int group;          /* scenario index, for the chart */
    int equal;          /* an async row at the load of another mode: BENCH_SYNC + 1 (1 in
                         * flight) or BENCH_THREADS + 1 (as many as the threads); else 0 */
    int reps;           /* runs of this row (the median is kept); 0 or 1: once */
    double rate;        /* open loop (--rate): requests per second, each timed from its
                         * intended send time; 0: closed loop (a reply sends the next) */
    uint64_t requests;
    char label[48];     /* the row's name when not its mode: reference tools, "async rediss" */
} bench_case;

/* A log-bucket histogram of latencies in microseconds: exact below 128 us,
 * then 64 sub-buckets per power of two (under 1.6% error). */
#define BENCH_HIST_SUB 64
#define BENCH_HIST_BUCKETS (128 + 40 * BENCH_HIST_SUB)
typedef struct bench_hist {
    uint64_t count;
    uint64_t max;
    uint64_t sum;
    uint64_t b[BENCH_HIST_BUCKETS];
} bench_hist;

void bench_hist_init(bench_hist *h);
void bench_hist_add(bench_hist *h, uint64_t us);
void bench_hist_merge(bench_hist *into, const bench_hist *from);
/* The latency (us) at quantile q in [0, 1]. */
uint64_t bench_hist_quantile(const bench_hist *h, double q);

typedef struct bench_result {
    bench_case c;
    double seconds;
    double ops_per_sec;
    uint64_t p50, p90, p99, p999, max; /* us */
    double cpu_us_per_op;
    long peak_rss_kb;
    uint64_t errors;
    double speedup; /* over the run named in vs; 0 if none */
    char vs[24];    /* what speedup compares with: "sync@1" (sync, 1 in flight) or
                     * "threads@8" (threads at the same number in flight) */
    double ops_min, ops_max; /* over the row's runs when it ran more than once */
    int runs;       /* how many times it ran */
    long rss_1m_kb; /* soak: RSS after the first million requests */
    long rss_end_kb;
    char note[96];
    double iter_max_ms;   /* cluster-refresh: the longest loop iteration */
    double iter_cpu_max_ms; /* cluster-refresh: the most CPU time one iteration took */
    double iter_extra_ms; /* cluster-refresh: the most of it beyond its replies' share */
    double timer_late_ms; /* cluster-refresh: the worst lateness of a 1 ms timer */
    uint64_t refreshes;   /* cluster-refresh: topology refreshes completed */
    int loops;            /* loop-group: the loops the row's jobs ran on */
} bench_result;

/* What a mode function fills in; the driver adds timing and resources. */
typedef struct bench_run {
    bench_hist hist;
    uint64_t done;
    uint64_t errors;
    long rss_1m_kb;
    uint64_t t0, t1;   /* wall clock of the timed part, us */
    double cpu0, cpu1; /* user + system CPU of the process, us */
    double iter_max_ms, iter_cpu_max_ms, iter_extra_ms, timer_late_ms; /* cluster-refresh */
    uint64_t refreshes;
    int loops; /* loop-group */
} bench_run;

/* Mode functions bracket the timed part (after connecting, before closing)
 * with these two. */
void bench_run_begin(bench_run *r);
void bench_run_end(bench_run *r);

/* Open loop: the intended send time (us, on bench_now_us's clock) of
 * request i of a run that began at t0_us and sends c->rate requests per
 * second. Latency counts from it, not from the actual send, so a request
 * held back by a full window or a slow reply still counts its wait
 * (coordinated omission). */
uint64_t bench_intended_us(const bench_case *c, uint64_t t0_us, uint64_t i);
/* The blocking modes' pacing: sleeps until request i's intended time and
 * returns it (a request already late goes at once). */
uint64_t bench_pace(const bench_case *c, uint64_t t0_us, uint64_t i);

/* Monotonic clock in microseconds. */
uint64_t bench_now_us(void);
/* CPU time of the calling thread, in microseconds. */
double bench_thread_cpu_us(void);

/* Progress on stderr (only when it is a terminal). */
void bench_progress(const bench_case *c, uint64_t done);

/* Resident set size now and its peak since the last reset, in KiB. */
long bench_rss_kb(void);
long bench_peak_rss_kb(void);
void bench_peak_rss_reset(void);

/* ---- Requests and expected replies (workload.c) ---- */

/* Writes the decimal digits of v at dst (no NUL); returns how many (at
 * most 20). */
size_t bench_put_u(char *dst, size_t v);

/* The value stored under key k (and the value of hash field f of key k when
 * f >= 0) into buf (at least data_size + 32 bytes). Returns its length. */
size_t bench_value(const bench_env *e, size_t k, int f, char *buf);

/* Builds the Redis command of request i. The strings live in `store`
 * (at least 4 * (data_size + 64) bytes). Returns argc. */
#define BENCH_MAX_ARGS 4
int bench_redis_argv(const bench_env *e, int op, uint64_t i, const char **argv,
                     size_t *lens, char *store);
size_t bench_redis_store_size(const bench_env *e);

/* A reply in a form both hiredis and volley replies convert to. */
enum { BENCH_R_STRING = 1, BENCH_R_ARRAY, BENCH_R_INTEGER, BENCH_R_NIL, BENCH_R_STATUS,
       BENCH_R_ERROR };
typedef struct bench_rreply {
    int type;
    const char *str;
    size_t len;
    long long integer;
    size_t count;
    /* Array elements (strings only are checked): */
    const char *el[2 * BENCH_MAX_HASH_FIELDS];
    size_t el_len[2 * BENCH_MAX_HASH_FIELDS];
} bench_rreply;

/* Converts a hiredis reply (sync, threads and raw modes). */
struct redisReply;
void bench_rreply_hiredis(const struct redisReply *r, bench_rreply *out);

/* Checks the reply of request i. Returns 0, or -1 after printing why (for
 * the first few failures only). */
int bench_redis_check(const bench_env *e, int op, uint64_t i, const bench_rreply *r,
                      const char *mode);

/* A MySQL request: the SQL text and, for the point select and the insert,
 * the values to bind to its '?' markers. Values are never pasted into SQL:
 * every mode sends them bound, over the binary protocol (prepared
 * statements). SELECT 1 and SLEEP carry no value and stay text queries. */
#define BENCH_SQL_POINT "SELECT id, v FROM bench_kv WHERE id = ?"
#define BENCH_SQL_INSERT "INSERT INTO bench_ins (k, v) VALUES (?, ?)"
typedef struct bench_mreq {
    const char *sql; /* static, or e->sleep_sql */
    int nparams;     /* 0 (text query), 1 (id) or 2 (k, v) */
    int64_t id;      /* point: the id; insert: k */
    char v[24];      /* insert: v, NUL-terminated */
    size_t v_len;
} bench_mreq;

/* Fills q for request i. */
void bench_mysql_req(const bench_env *e, int op, uint64_t i, bench_mreq *q);

/* Whether op goes through a prepared statement. */
int bench_mysql_prepared(int op);

/* A MySQL reply in a form every mode converts to: the shape, column 0 of
 * row 0 as an integer and column 1 of row 0 as bytes (each only when
 * present and not NULL), and the affected rows. Borrowed pointers. */
typedef struct bench_mreply {
    size_t rows, cols;
    int has_c0;
    int64_t c0;
    const char *c1; /* NULL when absent */
    size_t c1_len;
    uint64_t affected;
} bench_mreply;

/* The integer in the decimal text s[0..len), for text results. Returns 0,
 * or -1 when s is not one. */
int bench_mysql_int(const char *s, size_t len, int64_t *out);

/* Checks the reply of request i. Returns 0, or -1 after printing why. */
int bench_mysql_check(const bench_env *e, int op, uint64_t i, const bench_mreply *r,
                      const char *mode);

/* Reports a transport or server failure (rate-limited). */
void bench_fail(const char *mode, uint64_t i, const char *what, const char *msg);
/* Says "volley-bench: MODE: out of memory" and aborts: a run that cannot
 * keep its requests going has no figure to give. */
void bench_oom(const char *mode) __attribute__((noreturn));

/* Setup: writes keys and hashes to every host, creates and fills tables. */
int bench_redis_setup(const bench_env *e, int port);
int bench_mysql_setup(const bench_env *e);
int bench_mysql_truncate_insert(const bench_env *e);
/* Checks that bench_ins holds exactly the rows of inserts 0..n-1 (each k
 * once, each v right), then empties it. Returns 0, or -1 after printing
 * why. */
int bench_mysql_check_insert(const bench_env *e, uint64_t n, const char *mode);

/* ---- Modes ---- */

/* The port to reach Redis host h through (the proxy when c->via_proxy, the
 * TLS server when c->tls). */
int bench_redis_port(const bench_env *e, const bench_case *c, int h);

/* The volley URL of that port: redis://127.0.0.1:PORT, or with tls
 * rediss://127.0.0.1:PORT?cacert=FILE (e->tls_cacert). */
void bench_redis_url(const bench_env *e, int tls, int port, char *url, size_t cap);

int bench_sync_run(const bench_env *e, const bench_case *c, bench_run *r);
int bench_threads_run(const bench_env *e, const bench_case *c, bench_run *r);
/* --no-pool: async uses plain connections instead of volley's pools. */
extern int bench_async_no_pool;
int bench_async_run(const bench_env *e, const bench_case *c, bench_run *r);

/* Writes the GET keys (bench_value of each) to the server at url through
 * volley, for a server the hiredis setup cannot reach (rediss://).
 * Returns 0; 1 when this library does not support the URL's scheme
 * (VL_EUNSUPPORTED); -1 on any other failure. why gets the message. */
int bench_async_redis_fill(const bench_env *e, const char *url, char *why, size_t cap);
int bench_raw_run(const bench_env *e, const bench_case *c, bench_run *r);

/* Checks the reply that volley future f (completed) brought for request i,
 * as bench_redis_check does; a failed future is reported and fails too.
 * Returns 0 or -1. */
struct vl_future;
int bench_redis_check_future(const bench_env *e, int op, uint64_t i, struct vl_future *f,
                             const char *mode);

/* Writes the GET keys (the SETs of requests 0..keys) through `send` on
 * handle h (a vl_redis, a vl_redis_cluster), a batch of 1000 at a time on
 * loop, every reply checked. Returns 0, or -1 with why. */
struct vl_loop;
typedef struct vl_future *(*bench_send_fn)(void *h, int argc, const char **argv,
                                           const size_t *lens);
int bench_fill(struct vl_loop *loop, const bench_env *e, bench_send_fn send, void *h,
               char *why, size_t cap);

/* The end of a windowed load (cluster.c, group.c): bench_load_begin makes
 * *finish, a promise of loop that the load's last reply resolves (and sets
 * to NULL), and returns its future, or NULL when out of memory;
 * bench_load_wait runs loop until that future completes, frees it and the
 * promise if still there, and returns 0, or -1 when the loop ended first. */
struct vl_promise;
struct vl_future *bench_load_begin(struct vl_loop *loop, struct vl_promise **finish);
int bench_load_wait(struct vl_loop *loop, struct vl_promise **finish, struct vl_future *finished);

/* The async mode over the Redis Cluster at e->cluster_url (c->cluster):
 * bench_async_run calls it. */
int bench_cluster_run(const bench_env *e, const bench_case *c, bench_run *r);
/* Writes the GET keys to the cluster, as bench_redis_setup does to a plain
 * server. Returns 0, or -1 with why. */
int bench_cluster_fill(const bench_env *e, char *why, size_t cap);

/* The loop-group rows (group.c): `requests` jobs, each a GET of every key
 * of its own set and the parse of every reply, on one loop or on a
 * vl_loop_group (c->loop_group); bench_async_run calls it. */
int bench_group_run(const bench_env *e, const bench_case *c, bench_run *r);

/* Blocking MySQL connection helper shared by setup, sync and threads. */
struct st_mysql;
struct st_mysql *bench_mysql_connect(const bench_env *e, int nonblock);

/* Writes e->sleep_sql from e->sleep_ms. */
void bench_env_sleep(bench_env *e);

/* ---- The delaying proxy (proxy.c) ---- */

/* Starts one child process that listens on a new loopback port for each of
 * the n upstream ports and forwards both directions, each chunk delayed by
 * delay_us / 2 (so the round trip grows by delay_us). Chunks are timed one
 * by one: the proxy never serialises requests. Fills out_ports. Returns the
 * child's pid, or -1. */
int bench_proxy_start(const int *ports, int n, unsigned delay_us, int *out_ports);
void bench_proxy_stop(int pid);

/* ---- Reference tools (ref.c) ---- */

/* Runs redis-benchmark / mariadb-slap and returns ops/s (0 on failure).
 * cacert non-NULL: redis-benchmark --tls --cacert cacert. */
double bench_ref_redis_benchmark(const char *host, int port, int clients, int pipeline,
                                 uint64_t requests, size_t data_size, const char *cacert);
double bench_ref_mariadb_slap(const bench_env *e, int concurrency, uint64_t queries, int point);

/* ---- Targets ---- */

/* A goal of the Redis engine, measured by runs of the same bench run and
 * printed after the tables: a ratio of throughputs that must reach `bound`
 * or, with `bytes`, a memory cost that must stay within it. Never a
 * failure: the exit status speaks only of wrong replies and errors. */
enum { BENCH_TARGET_MET, BENCH_TARGET_NOT_MET, BENCH_TARGET_UNMEASURED, BENCH_TARGET_SKIPPED };
typedef struct bench_target {
    char name[48];  /* the scenario it reads, e.g. "redis-get-p16" */
    char what[96];  /* e.g. "redis-get-p16 async / redis-benchmark -c 50 -P 16" */
    int bytes;      /* value in bytes, at most bound; otherwise a ratio, at least bound */
    int ms;         /* value in milliseconds, at most bound */
    double value, bound;
    int status;     /* BENCH_TARGET_* */
    char note[448]; /* why it was not measured or skipped, or a comparison for context */
} bench_target;

/* ---- Output (output.c) ---- */

extern const char *const bench_mode_names[BENCH_NMODES];
const char *bench_kind_name(int kind);
/* A run's name in the tables: its label (reference tools, "async rediss")
 * or its mode. */
const char *bench_label(const bench_result *r);
void bench_table_header(FILE *f, const char *title);
void bench_table_row(FILE *f, const bench_result *r);
/* "target: ... = 1.07x (>= 1.0): met", one line. */
void bench_target_line(FILE *f, const bench_target *t);
int bench_write_csv(const char *path, const bench_result *rs, size_t n, const bench_target *ts,
                    size_t nt);
int bench_write_json(const char *path, const bench_result *rs, size_t n, const bench_target *ts,
                     size_t nt, const bench_env *e);

/* ---- Cleanup (cleanup.c) ---- */

/* What to remove at the end: the bench's keys (bench:*) on the plain
 * Redis servers, the TLS server and every cluster node, found by SCAN,
 * and its MySQL tables (and mariadb-slap's schema). */
typedef struct bench_cleanup_what {
    int redis, tls, cluster, mysql, quiet;
} bench_cleanup_what;
/* Returns 0, or -1 after printing what could not be removed. */
int bench_cleanup(const bench_env *e, const bench_cleanup_what *w);

/* Bytes of the async mode's bookkeeping per request in flight. */
extern const size_t bench_slot_bytes;

#endif
