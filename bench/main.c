/* SPDX-License-Identifier: BSD-3-Clause */
/* main.c - volley-bench: flags, the suite, the driver and the summary. */
#include <errno.h>
#include <arpa/inet.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"

static const char *const bench_usage =
    "usage: volley-bench [options]\n"
    "\n"
    "Runs the same requests against the same servers in several modes and\n"
    "prints one table per scenario (redis-benchmark style), every reply checked.\n"
    "Servers come from the environment written by tests/servers.sh\n"
    "(VL_TEST_REDIS_PORTS, VL_TEST_MYSQL_PORT or VL_TEST_MYSQL_SOCK,\n"
    "VL_TEST_MYSQL_USER, VL_TEST_MYSQL_PASSWORD, VL_TEST_MYSQL_DB);\n"
    "bench/run.sh starts them and runs the default suite.\n"
    "\n"
    "Modes (-m):\n"
    "  sync      one blocking connection per host, one request after another\n"
    "  threads   N threads, each with its own blocking connections\n"
    "  async     volley futures on one loop, `window` requests in flight\n"
    "  raw       the same async load without volley: Redis on a non-blocking\n"
    "            socket + hiredis's redisReader + libev, MySQL on Connector/C's\n"
    "            non-blocking API + libev\n"
    "\n"
    "Scenarios (-t, comma separated; default: all but soak, small scale sweep):\n"
    "  redis-get, redis-set, redis-hash (HSET + HGETALL)       kind cpu\n"
    "  redis-get-c50, redis-get-p16: GET on 50 connections, 1 or 16 in\n"
    "                flight each, beside redis-benchmark -c 50 [-P 16]; p16 adds\n"
    "                `async conns`, the async load on plain connections\n"
    "  redis-get-p1000: GET on 1 connection, 1000 in flight (async, raw),\n"
    "                beside redis-benchmark -c 1 -P 1000\n"
    "  redis-tls-p16 GET, 50 connections x 16, async over rediss:// and over\n"
    "                redis://, beside redis-benchmark --tls -c 50 -P 16\n"
    "                (VL_TEST_REDIS_TLS_PORT, VL_TEST_TLS_DIR/ca.crt; skipped\n"
    "                when unset or when the library refuses rediss://)\n"
    "  cluster-get, cluster-set: the GET or SET load (4 connections a server,\n"
    "                256 in flight) over the 3-primary Redis Cluster\n"
    "                (VL_TEST_CLUSTER_URL) and on one plain server, their ratio\n"
    "                printed\n"
    "  loop-group    jobs of 20 GETs of 500 comma-separated integers each, every\n"
    "                reply parsed and aggregated (CPU-bound client), 64 in\n"
    "                flight, on one loop and on a vl_loop_group of one loop per\n"
    "                CPU (each with its own pool), their ratio printed\n"
    "  cluster-refresh GET over the cluster, 1000 in flight, while topology\n"
    "                refreshes run back to back, and without: the longest loop\n"
    "                iteration and the worst lateness of a 1 ms timer, in ms\n"
    "  mysql-select1, mysql-point (primary key), mysql-insert  kind cpu\n"
    "                (point and insert bind their values: prepared statements);\n"
    "                select1 and point run async and raw three times each\n"
    "  mysql-bulk    the same 10k rows inserted row by row (async, window 8)\n"
    "                and with bulk execution, 1000 rows per call\n"
    "  mysql-sleep   SELECT SLEEP(s) over many connections     kind latency\n"
    "  redis-delay   GET over K hosts behind a delaying proxy  kind latency\n"
    "  scale         async GET: requests, connections, hosts   kind scale\n"
    "  soak-window   memory per request in flight (window 16 vs 16384)\n"
    "  soak          soak-window, then RSS after 1M vs 10M requests\n"
    "\n"
    "Options:\n"
    "  -t, --tests LIST        scenarios to run (see above)\n"
    "  -m, --modes LIST        modes to run (default sync,threads,async,raw)\n"
    "  -n, --requests N        requests per run (default: per scenario)\n"
    "      --time SECONDS      run each row for about SECONDS instead: its request\n"
    "                          count is sized from probe runs that grow until one\n"
    "                          lasts 0.2 s (as Go's testing.B does); with --rate,\n"
    "                          exactly rate x SECONDS requests\n"
    "      --rate N            open loop: send N requests per second (over the\n"
    "                          row's window) whatever the replies do, and time\n"
    "                          each request from its intended send time, so that\n"
    "                          queueing behind a slow reply is counted (no\n"
    "                          coordinated omission). sync, threads and async only\n"
    "                          (raw, the reference tools and the cluster rows are\n"
    "                          left out); requests: -n, or N x --time, or N x 5 s\n"
    "      --warmup N          before each row, run N of its requests untimed and\n"
    "                          discard them (a run of its own: it warms the\n"
    "                          servers, the caches and the machine)\n"
    "      --redis URL         use the existing Redis server at redis://HOST:PORT\n"
    "                          (repeat for more hosts, one HOST for all; no\n"
    "                          password) instead of VL_TEST_REDIS_PORTS\n"
    "      --mysql URL         use the existing MySQL/MariaDB server at\n"
    "                          mysql://USER[:PASSWORD]@HOST[:PORT]/DB instead of\n"
    "                          VL_TEST_MYSQL_*. With --redis or --mysql and no -t,\n"
    "                          the default suite keeps the scenarios of the\n"
    "                          servers given\n"
    "  -x, --multiply F        multiply every default request count by F\n"
    "                          (e.g. -x 10 for a run ten times longer)\n"
    "  -c, --connections N     total connections of threads/async/raw\n"
    "  -w, --window N          requests in flight in async/raw\n"
    "      --threads N         threads of the threads mode\n"
    "  -H, --hosts N           Redis hosts for redis-delay (default: all)\n"
    "  -D, --delay-ms D        round trip added by the proxy (default 10)\n"
    "      --sleep-ms S        SELECT SLEEP duration (default 10)\n"
    "  -d, --data-size N       bytes per Redis value (default 3)\n"
    "      --keys N            Redis keyspace (default 10000)\n"
    "      --rows N            rows of the point-select table (default 10000)\n"
    "      --scale             the full scale sweep: requests 10k..1M,\n"
    "                          connections 1..1000, hosts 1..all servers\n"
    "      --soak              add the 10M-request soak (scenario soak)\n"
    "      --no-ref            skip redis-benchmark and mariadb-slap\n"
    "      --no-pool           async: plain vl_redis / vl_mysql connections\n"
    "                          instead of vl_redis_pool / vl_mysql_pool\n"
    "      --no-fork           run everything in this process (for profilers;\n"
    "                          peak RSS then includes earlier runs)\n"
    "  -r, --repeat N          run every row N times, interleaved, and report\n"
    "                          the median ops/s with the min-max (default: the\n"
    "                          targets' rows 3 times, the others once)\n"
    "      --once              run every row once (-r 1; for profilers: one run\n"
    "                          of -n requests per row)\n"
    "      --keep              keep the keys (bench:*) and tables the bench wrote\n"
    "                          (default: removed at the end, SCAN + UNLINK on every\n"
    "                          Redis server and cluster node, DROP TABLE on MySQL)\n"
    "      --json FILE         write the results as JSON\n"
    "      --csv FILE          write the results as CSV (one row per run)\n"
    "  -q, --quiet             only the tables\n"
    "      --check-args        check the arguments and exit (0 when valid, 2\n"
    "                          otherwise), without any server\n"
    "  -h, --help              this text\n"
    "\n"
    "Every row's speedup names what it compares with: sync@1 (the sync row, 1\n"
    "request in flight) or threads@N (the threads row with the same N in\n"
    "flight). The cpu scenarios add async rows at those loads (\"async 1 in\n"
    "flight\", \"async N in flight\") and end with a verdict line at equal\n"
    "concurrency.\n"
    "\n"
    "After the tables, one line per target (async against redis-benchmark,\n"
    "memory per request in flight, rediss:// against redis://, MySQL async\n"
    "against raw, bulk against row by row): printed, never a failure.\n"
    "More hosts than servers: start more with VL_BENCH_HOSTS=64 bench/run.sh.\n"
    "Exit status: 0 when every reply was right, 1 otherwise, 2 for bad usage.\n";

enum {
    OPT_THREADS = 256, OPT_SLEEP, OPT_KEYS, OPT_ROWS, OPT_SCALE, OPT_SOAK, OPT_NOREF,
    OPT_JSON, OPT_CSV, OPT_NOPOOL, OPT_NOFORK, OPT_ONCE, OPT_CHECK, OPT_KEEP, OPT_TIME,
    OPT_RATE, OPT_WARMUP, OPT_REDIS, OPT_MYSQL
};

static const struct option bench_options[] = {
    {"tests", required_argument, NULL, 't'},
    {"modes", required_argument, NULL, 'm'},
    {"requests", required_argument, NULL, 'n'},
    {"multiply", required_argument, NULL, 'x'},
    {"connections", required_argument, NULL, 'c'},
    {"window", required_argument, NULL, 'w'},
    {"threads", required_argument, NULL, OPT_THREADS},
    {"hosts", required_argument, NULL, 'H'},
    {"delay-ms", required_argument, NULL, 'D'},
    {"sleep-ms", required_argument, NULL, OPT_SLEEP},
    {"data-size", required_argument, NULL, 'd'},
    {"keys", required_argument, NULL, OPT_KEYS},
    {"rows", required_argument, NULL, OPT_ROWS},
    {"scale", no_argument, NULL, OPT_SCALE},
    {"soak", no_argument, NULL, OPT_SOAK},
    {"no-ref", no_argument, NULL, OPT_NOREF},
    {"no-pool", no_argument, NULL, OPT_NOPOOL},
    {"no-fork", no_argument, NULL, OPT_NOFORK},
    {"once", no_argument, NULL, OPT_ONCE},
    {"repeat", required_argument, NULL, 'r'},
    {"keep", no_argument, NULL, OPT_KEEP},
    {"time", required_argument, NULL, OPT_TIME},
    {"rate", required_argument, NULL, OPT_RATE},
    {"warmup", required_argument, NULL, OPT_WARMUP},
    {"redis", required_argument, NULL, OPT_REDIS},
    {"mysql", required_argument, NULL, OPT_MYSQL},
    {"json", required_argument, NULL, OPT_JSON},
    {"csv", required_argument, NULL, OPT_CSV},
    {"quiet", no_argument, NULL, 'q'},
    {"check-args", no_argument, NULL, OPT_CHECK},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* Flags; -1 means "the scenario's own default". */
typedef struct bench_opts {
    char tests[512];
    int modes[BENCH_NMODES];
    long long requests;
    double multiply;
    int conns, window, threads, hosts;
    int scale, soak, ref, quiet, check, once, keep;
    int reps; /* -r; 0: the default (3 for the targets' rows, 1 otherwise) */
    double seconds, rate; /* --time, --rate; 0: off */
    long long warmup;     /* --warmup; 0: none */
    int tests_given, redis_given, mysql_given;
    const char *json, *csv;
} bench_opts;

/* The plan and its results. */
typedef struct bench_plan {
    bench_result *rs;
    size_t n, cap;
    int group;
} bench_plan;

static bench_env E;
static bench_opts O;
static volatile sig_atomic_t bench_proxy_pid;
static volatile sig_atomic_t bench_child_pid;

static void bench_on_signal(int sig)
{
    /* Only async-signal-safe calls: stop the proxy and the run under way,
     * then leave. */
    if (bench_child_pid > 0)
        kill(bench_child_pid, SIGTERM);
    if (bench_proxy_pid > 0)
        kill(bench_proxy_pid, SIGTERM);
    _exit(128 + sig);
}

static int bench_has_test(const char *name)
{
    char buf[sizeof O.tests];
    strcpy(buf, O.tests);
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save))
        if (strcmp(t, name) == 0)
            return 1;
    return 0;
}

static uint64_t bench_count(uint64_t dflt)
{
    if (O.requests > 0)
        return (uint64_t)O.requests;
    double n = (double)dflt * O.multiply;
    return n < 1 ? 1 : (uint64_t)n;
}

static int bench_pick(int flag, int dflt)
{
    return flag > 0 ? flag : dflt;
}

static bench_result *bench_add(bench_plan *p, const char *name, int kind, int backend, int op,
                               int mode)
{
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 64;
        bench_result *rs = realloc(p->rs, cap * sizeof *rs);
        if (rs == NULL) {
            fprintf(stderr, "volley-bench: out of memory\n");
            exit(1);
        }
        p->rs = rs;
        p->cap = cap;
    }
    bench_result *r = &p->rs[p->n++];
    memset(r, 0, sizeof *r);
    snprintf(r->c.name, sizeof r->c.name, "%s", name);
    r->c.kind = kind;
    r->c.backend = backend;
    r->c.op = op;
    r->c.mode = mode;
    r->c.hosts = 1;
    r->c.group = p->group;
    return r;
}

/* The async rows at the loads of sync and threads, so that every speedup
 * can compare equal concurrency: "async 1 in flight" (one connection per
 * host, as sync) and "async N in flight" (as many connections and requests
 * in flight as the threads mode has), each only beside the mode it is
 * compared with, and not when -c or -w fix the async load. They run at
 * most BENCH_EQUAL_MAX requests by default (at one request per round trip
 * that is a few seconds), to keep the suite's time. */
#define BENCH_EQUAL_MAX 20000

static uint64_t bench_equal_count(uint64_t n)
{
    return O.requests > 0 || n < BENCH_EQUAL_MAX ? n : BENCH_EQUAL_MAX;
}

static void bench_plan_equal(bench_plan *p, const char *name, int backend, int op, int hosts,
                             int threads, uint64_t n)
{
    if (!O.modes[BENCH_ASYNC] || O.conns > 0 || O.window > 0)
        return;
    const struct {
        int mode, conns, window;
    } at[] = {{BENCH_SYNC, hosts, 1}, {BENCH_THREADS, threads * hosts, threads}};
    for (size_t k = 0; k < 2; k++) {
        if (!O.modes[at[k].mode])
            continue;
        bench_result *r = bench_add(p, name, BENCH_KIND_CPU, backend, op, BENCH_ASYNC);
        r->c.hosts = hosts;
        r->c.conns = at[k].conns;
        r->c.window = at[k].window;
        r->c.requests = bench_equal_count(n);
        r->c.equal = at[k].mode + 1;
        snprintf(r->c.label, sizeof r->c.label, "async %d in flight", at[k].window);
    }
}

/* A cpu or latency scenario in every selected mode. `threads` threads each
 * have one connection per host; async and raw have `conns` connections in
 * total and `window` requests in flight; sync has one connection per host. */
static void bench_plan_scenario(bench_plan *p, const char *name, int kind, int backend, int op,
                                int hosts, int threads, int conns, int window, uint64_t n,
                                int via_proxy)
{
    for (int m = 0; m < BENCH_REF; m++) {
        if (!O.modes[m])
            continue;
        bench_result *r = bench_add(p, name, kind, backend, op, m);
        r->c.hosts = hosts;
        r->c.requests = n;
        r->c.via_proxy = via_proxy;
        switch (m) {
        case BENCH_SYNC:
            r->c.conns = hosts;
            r->c.window = 1;
            break;
        case BENCH_THREADS:
            r->c.threads = bench_pick(O.threads, threads);
            r->c.conns = r->c.threads * hosts;
            r->c.window = r->c.threads;
            break;
        default:
            r->c.conns = bench_pick(O.conns, conns);
            r->c.window = bench_pick(O.window, window);
            break;
        }
    }
    if (kind == BENCH_KIND_CPU)
        bench_plan_equal(p, name, backend, op, hosts, bench_pick(O.threads, threads), n);
    p->group++;
}

static bench_result *bench_plan_ref(bench_plan *p, const char *name, int backend,
                                    const char *label, int clients, int pipeline, uint64_t n)
{
    bench_result *r = bench_add(p, name, BENCH_KIND_CPU, backend, 0, BENCH_REF);
    snprintf(r->c.label, sizeof r->c.label, "%s", label);
    r->c.conns = clients;
    r->c.window = clients * pipeline;
    r->c.requests = n;
    r->c.group = p->group - 1;
    return r;
}

/* Sets the request count of the runs of scenario `name` in `mode` (unless
 * -n sets one for every run), and of the async row at that mode's load.
 * Called right after the scenario is planned. */
static void bench_plan_cut(bench_plan *p, const char *name, int mode, uint64_t n)
{
    if (O.requests > 0)
        return;
    for (size_t k = p->n; k-- > 0 && strcmp(p->rs[k].c.name, name) == 0;) {
        const bench_case *c = &p->rs[k].c;
        if (c->equal ? c->equal == mode + 1 : c->mode == mode)
            p->rs[k].c.requests = c->equal ? bench_equal_count(n) : n;
    }
}

/* A Redis GET scenario in async and raw only, as a group of its own: a
 * point of the scale sweep (the raw run shows how much of any growth is
 * the I/O pattern itself rather than volley), or a load that blocking
 * clients cannot make, such as 1000 in flight on one connection. */
static void bench_plan_async_raw(bench_plan *p, const char *name, int kind, int hosts, int conns,
                                 int window, uint64_t n)
{
    static const int modes[] = {BENCH_ASYNC, BENCH_RAW};
    for (size_t k = 0; k < 2; k++) {
        if (!O.modes[modes[k]])
            continue;
        bench_result *r = bench_add(p, name, kind, BENCH_REDIS, BENCH_OP_GET, modes[k]);
        r->c.hosts = hosts;
        r->c.conns = conns;
        r->c.window = window;
        r->c.requests = n;
    }
    p->group++;
}

/* One point of the scale sweep, a group of its own so the chart can place
 * it. */
static void bench_plan_scale(bench_plan *p, const char *name, int hosts, int conns, int window,
                             uint64_t n)
{
    bench_plan_async_raw(p, name, BENCH_KIND_SCALE, hosts, conns, window, n);
}

/* cluster-get / cluster-set: the same load over the Redis Cluster
 * (`conns` connections to each node, `window` in flight in all) and on one
 * plain redis-server (a pool of `conns` connections, the same window). */
static void bench_plan_cluster(bench_plan *p, const char *name, int op)
{
    if (!O.modes[BENCH_ASYNC])
        return;
    for (int k = 1; k >= 0; k--) {
        bench_result *r = bench_add(p, name, BENCH_KIND_CPU, BENCH_REDIS, op, BENCH_ASYNC);
        r->c.cluster = k;
        r->c.conns = bench_pick(O.conns, 4);
        r->c.window = bench_pick(O.window, 256);
        r->c.requests = bench_count(100000);
        snprintf(r->c.label, sizeof r->c.label, "%s", k ? "async cluster" : "async 1 server");
    }
    p->group++;
}

/* The Redis GET scenarios on plain servers: 4 x 64, then redis-benchmark's
 * loads (50 connections, -P 16, one connection with 1000 in flight). */
static void bench_plan_redis_get(bench_plan *p)
{
    if (bench_has_test("redis-get"))
        bench_plan_scenario(p, "redis-get", BENCH_KIND_CPU, BENCH_REDIS, BENCH_OP_GET, 1, 4, 4, 64,
                            bench_count(100000), 0);
    /* The same load as redis-benchmark: 50 connections with one request in
     * flight on each, then 16 on each (its -P 16), side by side with it.
     * sync and threads run fewer requests: at one request per round trip
     * they would take most of the suite's time for the same count, and
     * only their throughput matters here. */
    if (bench_has_test("redis-get-c50")) {
        bench_plan_scenario(p, "redis-get-c50", BENCH_KIND_CPU, BENCH_REDIS, BENCH_OP_GET, 1, 8,
                            50, 50, bench_count(200000), 0);
        bench_plan_cut(p, "redis-get-c50", BENCH_SYNC, bench_count(100000));
        bench_plan_cut(p, "redis-get-c50", BENCH_THREADS, bench_count(100000));
        if (O.ref)
            bench_plan_ref(p, "redis-get-c50", BENCH_REDIS, "redis-benchmark -c 50", 50, 1,
                           bench_count(200000));
    }
    /* Pipelining alone: one connection, 1000 in flight, beside
     * redis-benchmark -c 1 -P 1000. A blocking client cannot keep 1000 in
     * flight on one connection, so only async and raw run. */
    if (bench_has_test("redis-get-p1000")) {
        bench_plan_async_raw(p, "redis-get-p1000", BENCH_KIND_CPU, 1, bench_pick(O.conns, 1),
                             bench_pick(O.window, 1000), bench_count(1000000));
        if (O.ref)
            bench_plan_ref(p, "redis-get-p1000", BENCH_REDIS, "redis-benchmark -c 1 -P 1000", 1,
                           1000, bench_count(2000000));
    }
}

/* redis-get-p16, with the async load on plain connections beside the
 * pool's row. */
static void bench_plan_redis_p16(bench_plan *p)
{
    if (bench_has_test("redis-get-p16")) {
        bench_plan_scenario(p, "redis-get-p16", BENCH_KIND_CPU, BENCH_REDIS, BENCH_OP_GET, 1, 8,
                            50, 800, bench_count(500000), 0);
        bench_plan_cut(p, "redis-get-p16", BENCH_SYNC, bench_count(100000));
        bench_plan_cut(p, "redis-get-p16", BENCH_THREADS, bench_count(200000));
        /* The same async load on 50 plain connections, each keeping its 16
         * in flight, beside the pool, which picks connections itself: the
         * gap between the two rows is the pool's dispatch. */
        if (O.modes[BENCH_ASYNC] && !bench_async_no_pool) {
            bench_result *r = bench_add(p, "redis-get-p16", BENCH_KIND_CPU, BENCH_REDIS,
                                        BENCH_OP_GET, BENCH_ASYNC);
            r->c.group = p->group - 1;
            r->c.no_pool = 1;
            r->c.conns = bench_pick(O.conns, 50);
            r->c.window = bench_pick(O.window, 800);
            r->c.requests = bench_count(500000);
            snprintf(r->c.label, sizeof r->c.label, "async conns");
            /* Shown right below the pool's row. */
            size_t at = p->n - 1;
            while (at > 0 && (p->rs[at - 1].c.mode > BENCH_ASYNC || p->rs[at - 1].c.equal) &&
                   strcmp(p->rs[at - 1].c.name, "redis-get-p16") == 0)
                at--;
            bench_result row = p->rs[p->n - 1];
            memmove(&p->rs[at + 1], &p->rs[at], (p->n - 1 - at) * sizeof row);
            p->rs[at] = row;
        }
        if (O.ref)
            bench_plan_ref(p, "redis-get-p16", BENCH_REDIS, "redis-benchmark -c 50 -P 16", 50, 16,
                           bench_count(1000000));
    }
}

/* The TLS and Redis Cluster scenarios: async rows only. */
static void bench_plan_tls_cluster(bench_plan *p)
{
    /* The 50 x 16 load of redis-get-p16 over rediss:// to the TLS server,
     * and over redis:// (the first plain server) in the same scenario for
     * the ratio, beside redis-benchmark --tls. The rows are dropped before
     * the runs when there is no TLS server or the library refuses
     * rediss:// (bench_tls_prepare). */
    if (bench_has_test("redis-tls-p16") && O.modes[BENCH_ASYNC]) {
        for (int tls = 1; tls >= 0; tls--) {
            bench_result *r = bench_add(p, "redis-tls-p16", BENCH_KIND_CPU, BENCH_REDIS,
                                        BENCH_OP_GET, BENCH_ASYNC);
            r->c.tls = tls;
            r->c.conns = bench_pick(O.conns, 50);
            r->c.window = bench_pick(O.window, 800);
            r->c.requests = bench_count(500000);
            snprintf(r->c.label, sizeof r->c.label, "%s", tls ? "async rediss" : "async redis");
        }
        p->group++;
        if (O.ref)
            bench_plan_ref(p, "redis-tls-p16", BENCH_REDIS, "redis-benchmark --tls -c 50 -P 16",
                           50, 16, bench_count(1000000))->c.tls = 1;
    }
    if (bench_has_test("cluster-get"))
        bench_plan_cluster(p, "cluster-get", BENCH_OP_GET);
    if (bench_has_test("cluster-set"))
        bench_plan_cluster(p, "cluster-set", BENCH_OP_SET);
    /* The no-stall figure: 1000 GETs in flight over the cluster while
     * refreshes run back to back, and the same without refreshes, for the
     * loop's own baseline. */
    if (bench_has_test("cluster-refresh") && O.modes[BENCH_ASYNC]) {
        for (int k = 1; k >= 0; k--) {
            bench_result *r = bench_add(p, "cluster-refresh", BENCH_KIND_LATENCY, BENCH_REDIS,
                                        BENCH_OP_GET, BENCH_ASYNC);
            r->c.cluster = 1;
            r->c.refresh = k;
            r->c.conns = bench_pick(O.conns, 4);
            r->c.window = bench_pick(O.window, 1000);
            r->c.requests = bench_count(200000);
            snprintf(r->c.label, sizeof r->c.label, "%s",
                     k ? "async refreshing" : "async no refresh");
        }
        p->group++;
    }
}

/* redis-set and redis-hash: the 4 x 64 load of redis-get. */
static void bench_plan_redis_write(bench_plan *p)
{
    if (bench_has_test("redis-set"))
        bench_plan_scenario(p, "redis-set", BENCH_KIND_CPU, BENCH_REDIS, BENCH_OP_SET, 1, 4, 4, 64,
                            bench_count(100000), 0);
    if (bench_has_test("redis-hash"))
        bench_plan_scenario(p, "redis-hash", BENCH_KIND_CPU, BENCH_REDIS, BENCH_OP_HASH, 1, 4, 4,
                            64, bench_count(100000), 0);
}

/* The MySQL scenarios. */
static void bench_plan_mysql(bench_plan *p)
{
    /* async and raw of select1 and point are the MySQL targets' rows: each
     * runs three times (bench_reps), so each run is shorter. */
    if (bench_has_test("mysql-select1")) {
        bench_plan_scenario(p, "mysql-select1", BENCH_KIND_CPU, BENCH_MYSQL, BENCH_OP_SELECT1, 1,
                            8, 8, 8, bench_count(50000), 0);
        bench_plan_cut(p, "mysql-select1", BENCH_ASYNC, bench_count(20000));
        bench_plan_cut(p, "mysql-select1", BENCH_RAW, bench_count(20000));
        if (O.ref)
            bench_plan_ref(p, "mysql-select1", BENCH_MYSQL, "mariadb-slap -c 8", 8, 1,
                           bench_count(50000));
    }
    if (bench_has_test("mysql-point")) {
        bench_plan_scenario(p, "mysql-point", BENCH_KIND_CPU, BENCH_MYSQL, BENCH_OP_POINT, 1, 8, 8,
                            8, bench_count(50000), 0);
        bench_plan_cut(p, "mysql-point", BENCH_ASYNC, bench_count(15000));
        bench_plan_cut(p, "mysql-point", BENCH_RAW, bench_count(15000));
        /* mariadb-slap cannot bind: it repeats one text query with one
         * fixed id, where every mode here binds a different id each time. */
        if (O.ref) {
            bench_result *r = bench_plan_ref(p, "mysql-point", BENCH_MYSQL, "mariadb-slap -c 8",
                                             8, 1, bench_count(50000));
            r->c.op = BENCH_OP_POINT;
            snprintf(r->note, sizeof r->note, "text protocol, one fixed id");
        }
    }
    if (bench_has_test("mysql-insert"))
        bench_plan_scenario(p, "mysql-insert", BENCH_KIND_CPU, BENCH_MYSQL, BENCH_OP_INSERT, 1, 8,
                            8, 8, bench_count(10000), 0);
    /* The same rows inserted row by row, 8 in flight, and 1000 per bulk
     * call, one call at a time, on the same 8 connections; requests count
     * rows. Bulk calls in parallel only compete for the server: on two
     * cores 8 in flight made fewer rows per second than one. */
    if (bench_has_test("mysql-bulk") && O.modes[BENCH_ASYNC]) {
        static const int chunks[] = {1, 1000}, windows[] = {8, 1};
        for (size_t k = 0; k < 2; k++) {
            bench_result *r = bench_add(p, "mysql-bulk", BENCH_KIND_CPU, BENCH_MYSQL,
                                        BENCH_OP_BULK, BENCH_ASYNC);
            r->c.chunk = chunks[k];
            r->c.conns = bench_pick(O.conns, 8);
            r->c.window = bench_pick(O.window, windows[k]);
            r->c.requests = bench_count(10000);
            snprintf(r->c.label, sizeof r->c.label, "%s",
                     k == 0 ? "async row-by-row" : "async bulk x1000");
        }
        p->group++;
    }
    if (bench_has_test("mysql-sleep")) {
        /* The sync run is cut short: at one statement per sleep it would
         * take `conns` times longer than the others for the same count. */
        bench_plan_scenario(p, "mysql-sleep", BENCH_KIND_LATENCY, BENCH_MYSQL, BENCH_OP_SLEEP, 1,
                            32, 32, 32, bench_count(3200), 0);
        bench_plan_cut(p, "mysql-sleep", BENCH_SYNC, bench_count(100));
    }
}

/* The latency, scale and memory scenarios. */
static void bench_plan_sweeps(bench_plan *p, int hosts)
{
    if (bench_has_test("redis-delay"))
        bench_plan_scenario(p, "redis-delay", BENCH_KIND_LATENCY, BENCH_REDIS, BENCH_OP_GET, hosts,
                            hosts, hosts, hosts, bench_count(400), 1);
    if (bench_has_test("scale")) {
        static const uint64_t small_n[] = {10000, 100000};
        static const uint64_t big_n[] = {10000, 100000, 1000000};
        static const int small_c[] = {1, 10, 100};
        static const int big_c[] = {1, 10, 100, 1000};
        const uint64_t *ns = O.scale ? big_n : small_n;
        const int *cs = O.scale ? big_c : small_c;
        size_t nn = O.scale ? 3 : 2, nc = O.scale ? 4 : 3;
        for (size_t k = 0; k < nn; k++)
            bench_plan_scale(p, "scale-requests", 1, 4, 64, O.requests > 0 ? (uint64_t)O.requests
                                                                           : ns[k]);
        for (size_t k = 0; k < nc; k++)
            bench_plan_scale(p, "scale-connections", 1, cs[k], cs[k] > 64 ? cs[k] : 64,
                             bench_count(50000));
        int cap = O.scale ? E.nredis : (E.nredis < 4 ? E.nredis : 4);
        for (int h = 1; h <= cap; h *= 2)
            bench_plan_scale(p, "scale-hosts", h, h, 64, bench_count(50000));
        if (cap > 0 && (cap & (cap - 1)) != 0)
            bench_plan_scale(p, "scale-hosts", cap, cap, 64, bench_count(50000));
    }
}

/* The memory per request in flight and the 10M-request soak. */
static void bench_plan_soak(bench_plan *p)
{
    if (bench_has_test("soak-window") || bench_has_test("soak") || O.soak) {
        /* Memory per request in flight: the same run with a small and a big
         * window, in async and raw. */
        static const int modes[] = {BENCH_ASYNC, BENCH_RAW};
        static const int windows[] = {16, 16384};
        for (size_t m = 0; m < 2; m++) {
            for (size_t k = 0; k < 2 && O.modes[modes[m]]; k++) {
                bench_result *r = bench_add(p, "soak-window", BENCH_KIND_MEMORY, BENCH_REDIS,
                                            BENCH_OP_GET, modes[m]);
                r->c.conns = 4;
                r->c.window = windows[k];
                r->c.requests = bench_count(200000);
            }
        }
        p->group++;
    }
    if (bench_has_test("soak") || O.soak) {
        /* Growth over time: RSS after 1M and after 10M requests. */
        bench_result *r = bench_add(p, "soak-10m", BENCH_KIND_MEMORY, BENCH_REDIS, BENCH_OP_GET,
                                    BENCH_ASYNC);
        r->c.conns = 4;
        r->c.window = 64;
        r->c.requests = bench_count(10000000);
        p->group++;
    }
}

/* --rate: every row runs open loop, at the rate given, for -n requests,
 * or rate x --time, or rate x 5 s. The modes without an open loop (raw,
 * the reference tools, the cluster, the memory runs) leave the plan. */
static void bench_plan_open_loop(bench_plan *p)
{
    size_t o = 0, dropped = 0;
    if (O.rate <= 0)
        return;
    uint64_t n = O.requests > 0 ? (uint64_t)O.requests
                                : (uint64_t)(O.rate * (O.seconds > 0 ? O.seconds : 5.0) + 0.5);
    for (size_t k = 0; k < p->n; k++) {
        bench_case *c = &p->rs[k].c;
        if (c->mode == BENCH_RAW || c->mode == BENCH_REF || c->cluster || c->loop_group ||
            c->kind == BENCH_KIND_MEMORY) {
            dropped++;
            continue;
        }
        c->rate = O.rate;
        c->requests = n > 0 ? n : 1;
        p->rs[o++] = p->rs[k];
    }
    p->n = o;
    if (dropped && !O.quiet)
        fprintf(stderr, "volley-bench: --rate: %zu rows left out (raw, the reference tools, "
                        "the cluster, loop-group and memory rows have no open loop)\n",
                dropped);
}

/* loop-group: the same jobs on one loop (a pool there) and through a
 * vl_loop_group of one loop per CPU (a pool on each), `window` jobs in
 * flight in both; requests count jobs. */
static void bench_plan_loop_group(bench_plan *p)
{
    if (!bench_has_test("loop-group") || !O.modes[BENCH_ASYNC])
        return;
    for (int k = 2; k >= 1; k--) {
        bench_result *r = bench_add(p, "loop-group", BENCH_KIND_CPU, BENCH_REDIS, BENCH_OP_GET,
                                    BENCH_ASYNC);
        r->c.loop_group = k;
        r->c.window = bench_pick(O.window, 64);
        r->c.requests = bench_count(2000);
        snprintf(r->c.label, sizeof r->c.label, "%s", k == 2 ? "async loop group" : "async 1 loop");
    }
    p->group++;
}

/* The runs of the selected scenarios, in the order of the tables. */
static void bench_build_plan(bench_plan *p)
{
    bench_plan_redis_get(p);
    bench_plan_redis_p16(p);
    bench_plan_tls_cluster(p);
    bench_plan_loop_group(p);
    bench_plan_redis_write(p);
    bench_plan_mysql(p);
    bench_plan_sweeps(p, O.hosts > 0 ? O.hosts : E.nredis);
    bench_plan_soak(p);
    bench_plan_open_loop(p);
}

/* Runs one case and fills its result. */
static int bench_execute_here(bench_result *res)
{
    bench_case *c = &res->c;
    bench_run run;
    int rc;
    memset(&run, 0, sizeof run);
    bench_hist_init(&run.hist);
    if (c->mode == BENCH_REF) {
        double ops = 0;
        uint64_t t0 = bench_now_us();
        if (c->backend == BENCH_REDIS)
            ops = bench_ref_redis_benchmark(c->tls ? "127.0.0.1" : E.redis_host,
                                            c->tls ? E.redis_tls_port : E.redis_ports[0],
                                            c->conns, c->window / c->conns, c->requests,
                                            E.data_size, c->tls ? E.tls_cacert : NULL);
        else
            ops = bench_ref_mariadb_slap(&E, c->conns, c->requests,
                                         c->op == BENCH_OP_POINT);
        res->seconds = (double)(bench_now_us() - t0) / 1e6;
        res->ops_per_sec = ops;
        if (ops <= 0)
            snprintf(res->note, sizeof res->note, "failed to run");
        return 0;
    }
    int inserts = c->op == BENCH_OP_INSERT || c->op == BENCH_OP_BULK;
    if (inserts && bench_mysql_truncate_insert(&E) != 0)
        return -1;
    bench_peak_rss_reset();
    switch (c->mode) {
    case BENCH_SYNC: rc = bench_sync_run(&E, c, &run); break;
    case BENCH_THREADS: rc = bench_threads_run(&E, c, &run); break;
    case BENCH_ASYNC: rc = bench_async_run(&E, c, &run); break;
    default: rc = bench_raw_run(&E, c, &run); break;
    }
    if (rc != 0) {
        res->errors = c->requests;
        snprintf(res->note, sizeof res->note, "did not run");
        return -1;
    }
    res->seconds = (double)(run.t1 - run.t0) / 1e6;
    res->ops_per_sec = res->seconds > 0 ? (double)run.done / res->seconds : 0;
    res->p50 = bench_hist_quantile(&run.hist, 0.50);
    res->p90 = bench_hist_quantile(&run.hist, 0.90);
    res->p99 = bench_hist_quantile(&run.hist, 0.99);
    res->p999 = bench_hist_quantile(&run.hist, 0.999);
    res->max = run.hist.max;
    res->cpu_us_per_op = run.done ? (run.cpu1 - run.cpu0) / (double)run.done : 0;
    res->peak_rss_kb = bench_peak_rss_kb();
    res->rss_end_kb = bench_rss_kb();
    res->rss_1m_kb = run.rss_1m_kb;
    res->iter_max_ms = run.iter_max_ms;
    res->iter_cpu_max_ms = run.iter_cpu_max_ms;
    res->iter_extra_ms = run.iter_extra_ms;
    res->timer_late_ms = run.timer_late_ms;
    res->refreshes = run.refreshes;
    res->loops = run.loops;
    if (c->cluster && c->kind == BENCH_KIND_LATENCY)
        snprintf(res->note, sizeof res->note,
                 "iteration CPU max %.2f, beyond replies %.2f, wall %.2f; timer %.2f late; %" PRIu64
                 " refreshes", run.iter_cpu_max_ms, run.iter_extra_ms, run.iter_max_ms,
                 run.timer_late_ms, run.refreshes);
    res->errors = run.errors + (c->requests - run.done);
    /* Every row written, once and right; then the rows go. */
    if (inserts) {
        if (res->errors != 0)
            (void)bench_mysql_truncate_insert(&E);
        else if (bench_mysql_check_insert(&E, c->requests, bench_label(res)) != 0)
            res->errors++;
    }
    return 0;
}

/* Each run happens in a child process of its own, so that its peak RSS and
 * CPU time are its own and not what earlier runs left behind (freed memory
 * stays resident). The result comes back through a pipe. */
static int bench_no_fork;

static int bench_execute(bench_result *res);

/* The scenarios whose rows the engine's targets compare (see
 * bench_targets): two of their rows measured minutes apart on a shared
 * 2-core machine would compare the machine's moods as much as the
 * clients, so by default they run BENCH_TARGET_REPS times, interleaved,
 * and the medians are compared. */
#define BENCH_TARGET_REPS 3

static int bench_is_target_row(const bench_case *c)
{
    const char *name = c->name;
    /* redis-get-p16's target compares async with redis-benchmark (and
     * async conns and raw with it): its blocking rows run once. */
    if (strcmp(name, "redis-get-p16") == 0)
        return c->equal == 0 && c->mode != BENCH_SYNC && c->mode != BENCH_THREADS;
    if (strcmp(name, "redis-get-p1000") == 0 ||
        strcmp(name, "redis-tls-p16") == 0 || strcmp(name, "mysql-bulk") == 0 ||
        strcmp(name, "cluster-get") == 0 || strcmp(name, "cluster-set") == 0 ||
        strcmp(name, "loop-group") == 0)
        return 1;
    /* The MySQL async/raw targets: only those two rows. */
    if (strcmp(name, "mysql-select1") == 0 || strcmp(name, "mysql-point") == 0)
        return c->equal == 0 && (c->mode == BENCH_ASYNC || c->mode == BENCH_RAW);
    return 0;
}

/* How many times row c runs: -r, or 1 with --once, or by default
 * BENCH_TARGET_REPS for the targets' rows and 1 for the others. */
static int bench_reps(const bench_case *c)
{
    if (O.reps > 0)
        return O.reps;
    if (O.once)
        return 1;
    return bench_is_target_row(c) ? BENCH_TARGET_REPS : 1;
}

static int bench_by_ops(const void *a, const void *b)
{
    double x = ((const bench_result *)a)->ops_per_sec, y = ((const bench_result *)b)->ops_per_sec;
    return x < y ? -1 : x > y;
}

/* Runs rows rs[0..n) (pointers into the plan) `reps` times in turn (row
 * 1, row 2, ..., row 1, row 2, ...) and keeps for each the run with its
 * median ops/s (the lower of the middle two for an even count; its
 * percentiles and CPU with it) and the lowest and highest ops/s; the
 * errors of every run count. */
static int bench_run_repeated(bench_result **rs, size_t n, int reps)
{
    bench_result *runs = malloc(n * (size_t)reps * sizeof *runs);
    int rc = 0;
    if (runs == NULL) {
        fprintf(stderr, "volley-bench: out of memory\n");
        exit(1);
    }
    for (int rep = 0; rep < reps; rep++)
        for (size_t i = 0; i < n; i++) {
            bench_result *run = &runs[i * (size_t)reps + (size_t)rep];
            *run = *rs[i];
            if (bench_execute(run) != 0)
                rc = -1;
        }
    for (size_t i = 0; i < n; i++) {
        bench_result *mine = &runs[i * (size_t)reps];
        uint64_t errors = 0;
        for (int rep = 0; rep < reps; rep++)
            errors += mine[rep].errors;
        qsort(mine, (size_t)reps, sizeof *mine, bench_by_ops);
        *rs[i] = mine[(reps - 1) / 2];
        rs[i]->errors = errors;
        rs[i]->runs = reps;
        rs[i]->ops_min = mine[0].ops_per_sec;
        rs[i]->ops_max = mine[reps - 1].ops_per_sec;
    }
    free(runs);
    return rc;
}

static int bench_execute(bench_result *res)
{
    int p[2];
    if (bench_no_fork || pipe(p) != 0)
        return bench_execute_here(res);
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        close(p[0]);
        close(p[1]);
        return bench_execute_here(res);
    }
    if (pid == 0) {
        close(p[0]);
        /* The run must not outlive the bench, however the bench ends. */
        bench_child_pid = 0;
        bench_proxy_pid = 0;
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() == 1)
            _exit(1);
        int rc = bench_execute_here(res);
        const char *b = (const char *)res;
        size_t left = sizeof *res;
        while (left > 0) {
            ssize_t w = write(p[1], b, left);
            if (w <= 0)
                _exit(3);
            b += w;
            left -= (size_t)w;
        }
        _exit(rc == 0 ? 0 : 1);
    }
    bench_child_pid = pid;
    close(p[1]);
    bench_result got;
    size_t have = 0;
    while (have < sizeof got) {
        ssize_t r = read(p[0], (char *)&got + have, sizeof got - have);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        have += (size_t)r;
    }
    close(p[0]);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    bench_child_pid = 0;
    if (have < sizeof got) {
        res->errors = res->c.requests ? res->c.requests : 1;
        snprintf(res->note, sizeof res->note, "the run died (%s %d)",
                 WIFSIGNALED(st) ? "signal" : "status",
                 WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
        return -1;
    }
    *res = got;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

static int bench_split_ports(const char *s, int *out, int max)
{
    int n = 0;
    while (s && *s && n < max) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v <= 0 || v > 65535)
            return -1;
        out[n++] = (int)v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',')
            return -1;
    }
    return n;
}

static void bench_env_init(void)
{
    const char *s = getenv("VL_TEST_REDIS_PORTS");
    E.nredis = s ? bench_split_ports(s, E.redis_ports, BENCH_MAX_HOSTS) : 0;
    s = getenv("VL_TEST_MYSQL_PORT");
    E.mysql_port = s ? atoi(s) : 0;
    /* TCP when there is a port, like a remote server; the socket otherwise. */
    E.mysql_sock = E.mysql_port ? NULL : getenv("VL_TEST_MYSQL_SOCK");
    if (E.mysql_sock && !*E.mysql_sock)
        E.mysql_sock = NULL;
    E.mysql_user = getenv("VL_TEST_MYSQL_USER");
    E.mysql_password = getenv("VL_TEST_MYSQL_PASSWORD");
    E.mysql_db = getenv("VL_TEST_MYSQL_DB");
    if (!E.mysql_user)
        E.mysql_user = "volley";
    if (!E.mysql_db)
        E.mysql_db = "volley_test";
    s = getenv("VL_TEST_REDIS_TLS_PORT");
    E.redis_tls_port = s ? atoi(s) : 0;
    s = getenv("VL_TEST_CLUSTER_URL");
    if (s && *s)
        snprintf(E.cluster_url, sizeof E.cluster_url, "%s", s);
    s = getenv("VL_TEST_TLS_DIR");
    if (s && *s)
        snprintf(E.tls_cacert, sizeof E.tls_cacert, "%s/ca.crt", s);
    snprintf(E.redis_host, sizeof E.redis_host, "127.0.0.1");
    snprintf(E.mysql_host, sizeof E.mysql_host, "127.0.0.1");
    E.keys = 10000;
    E.rows = 10000;
    E.data_size = 3;
    E.sleep_ms = 10;
    E.delay_ms = 10;
}

static int bench_parse_modes(const char *s)
{
    char buf[128];
    memset(O.modes, 0, sizeof O.modes);
    snprintf(buf, sizeof buf, "%s", s);
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        int found = 0;
        for (int m = 0; m < BENCH_REF; m++)
            if (strcmp(t, bench_mode_names[m]) == 0)
                O.modes[m] = found = 1;
        if (!found) {
            fprintf(stderr, "volley-bench: unknown mode '%s'\n", t);
            return -1;
        }
    }
    return 0;
}

static int bench_check_tests(void)
{
    static const char *const known[] = {"redis-get", "redis-get-c50", "redis-get-p16",
                                        "redis-get-p1000", "redis-tls-p16", "redis-set",
                                        "redis-hash", "mysql-select1", "mysql-point",
                                        "mysql-insert", "mysql-bulk", "mysql-sleep",
                                        "redis-delay", "scale", "soak-window", "soak",
                                        "cluster-get", "cluster-set", "cluster-refresh",
                                        "loop-group"};
    char buf[sizeof O.tests];
    strcpy(buf, O.tests);
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        size_t k;
        for (k = 0; k < sizeof known / sizeof known[0]; k++)
            if (strcmp(t, known[k]) == 0)
                break;
        if (k == sizeof known / sizeof known[0]) {
            fprintf(stderr, "volley-bench: unknown scenario '%s' (see --help)\n", t);
            return -1;
        }
    }
    return 0;
}

static long long bench_num(const char *s, const char *flag)
{
    char *end;
    long long v = strtoll(s, &end, 10);
    if (*end == 'k' || *end == 'K')
        v *= 1000, end++;
    else if (*end == 'M' || *end == 'm')
        v *= 1000000, end++;
    if (*end || v <= 0) {
        fprintf(stderr, "volley-bench: %s wants a positive number, got '%s'\n", flag, s);
        exit(2);
    }
    return v;
}

static double bench_real(const char *s, const char *flag)
{
    char *end;
    double v = strtod(s, &end);
    if (*end || !(v > 0) || v > 1e9) {
        fprintf(stderr, "volley-bench: %s wants a positive number, got '%s'\n", flag, s);
        exit(2);
    }
    return v;
}

/* HOST of a URL, resolved to an IPv4 address (raw mode connects by
 * address) into out. Exits 2 when it does not resolve. */
static void bench_resolve(const char *host, size_t len, const char *flag, char *out, size_t cap)
{
    char name[256];
    struct addrinfo hints, *ai = NULL;
    snprintf(name, sizeof name, "%.*s", (int)len, host);
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    if (len == 0 || len >= sizeof name || getaddrinfo(name, NULL, &hints, &ai) != 0) {
        fprintf(stderr, "volley-bench: %s: cannot resolve host '%s' (IPv4)\n", flag, name);
        exit(2);
    }
    inet_ntop(AF_INET, &((struct sockaddr_in *)ai->ai_addr)->sin_addr, out, (socklen_t)cap);
    freeaddrinfo(ai);
}

/* ":PORT" at s (or the default when s is not ':'), up to end. */
static int bench_url_port(const char *s, const char *end, int dflt, const char *flag)
{
    if (s == end)
        return dflt;
    char *stop;
    long v = *s == ':' ? strtol(s + 1, &stop, 10) : -1;
    if (*s != ':' || stop != end || v <= 0 || v > 65535) {
        fprintf(stderr, "volley-bench: %s: bad port in the URL\n", flag);
        exit(2);
    }
    return (int)v;
}

/* --redis redis://HOST[:PORT][/]: one more host. */
static void bench_parse_redis_url(const char *url)
{
    char addr[64];
    if (strncmp(url, "redis://", 8) != 0 || strchr(url, '@') != NULL) {
        fprintf(stderr, "volley-bench: --redis wants redis://HOST[:PORT] (no password), got "
                        "'%.100s'\n", strchr(url, '@') ? "a URL with a password" : url);
        exit(2);
    }
    const char *h = url + 8, *end = h + strcspn(h, "/");
    const char *colon = memchr(h, ':', (size_t)(end - h));
    if ((*end == '/' && end[1] != '\0') || E.nredis >= BENCH_MAX_HOSTS) {
        fprintf(stderr, "volley-bench: --redis: no database number, at most %d hosts\n",
                BENCH_MAX_HOSTS);
        exit(2);
    }
    bench_resolve(h, (size_t)((colon ? colon : end) - h), "--redis", addr, sizeof addr);
    if (O.redis_given && strcmp(addr, E.redis_host) != 0) {
        fprintf(stderr, "volley-bench: --redis: every host must have the same address\n");
        exit(2);
    }
    if (!O.redis_given)
        E.nredis = 0;
    snprintf(E.redis_host, sizeof E.redis_host, "%s", addr);
    E.redis_ports[E.nredis++] = bench_url_port(colon ? colon : end, end, 6379, "--redis");
    O.redis_given = 1;
}

/* --mysql mysql://USER[:PASSWORD]@HOST[:PORT]/DB: the password is kept,
 * never printed. */
static void bench_parse_mysql_url(const char *url)
{
    static char user[128], pass[256], db[128];
    const char *s = url + 8, *at = strrchr(url, '@');
    if (strncmp(url, "mysql://", 8) != 0 || at == NULL || at < s || strchr(at, '/') == NULL) {
        fprintf(stderr, "volley-bench: --mysql wants mysql://USER[:PASSWORD]@HOST[:PORT]/DB\n");
        exit(2);
    }
    const char *colon = memchr(s, ':', (size_t)(at - s));
    snprintf(user, sizeof user, "%.*s", (int)((colon ? colon : at) - s), s);
    snprintf(pass, sizeof pass, "%.*s", colon ? (int)(at - colon - 1) : 0, colon ? colon + 1 : "");
    const char *h = at + 1, *slash = strchr(h, '/');
    const char *hc = memchr(h, ':', (size_t)(slash - h));
    snprintf(db, sizeof db, "%s", slash + 1);
    if (user[0] == '\0' || db[0] == '\0') {
        fprintf(stderr, "volley-bench: --mysql: the URL needs a user and a database\n");
        exit(2);
    }
    bench_resolve(h, (size_t)((hc ? hc : slash) - h), "--mysql", E.mysql_host,
                  sizeof E.mysql_host);
    E.mysql_port = bench_url_port(hc ? hc : slash, slash, 3306, "--mysql");
    E.mysql_sock = NULL;
    E.mysql_user = user;
    E.mysql_password = pass;
    E.mysql_db = db;
    O.mysql_given = 1;
}

/* With --redis or --mysql and no -t: the default suite's scenarios of
 * the servers given (the TLS and cluster ones come from the
 * environment, and redis-delay's proxy listens on loopback). */
static void bench_tests_for_servers(void)
{
    static const char redis[] = "redis-get,redis-get-c50,redis-get-p16,redis-get-p1000,"
                                "redis-set,redis-hash,scale,soak-window";
    static const char mysql[] = "mysql-select1,mysql-point,mysql-insert,mysql-bulk,"
                                "mysql-sleep";
    if (O.tests_given || (!O.redis_given && !O.mysql_given))
        return;
    snprintf(O.tests, sizeof O.tests, "%s%s%s", O.redis_given ? redis : "",
             O.redis_given && O.mysql_given ? "," : "", O.mysql_given ? mysql : "");
}

static void bench_check_opts(void);

static void bench_parse(int argc, char **argv)
{
    int ch;
    snprintf(O.tests, sizeof O.tests, "redis-get,redis-get-c50,redis-get-p16,redis-get-p1000,"
                                      "redis-tls-p16,cluster-get,cluster-set,cluster-refresh,"
                                      "redis-set,redis-hash,mysql-select1,"
                                      "mysql-point,mysql-insert,mysql-bulk,mysql-sleep,"
                                      "redis-delay,scale,soak-window");
    bench_parse_modes("sync,threads,async,raw");
    O.requests = O.conns = O.window = O.threads = O.hosts = -1;
    O.multiply = 1.0;
    O.ref = 1;
    while ((ch = getopt_long(argc, argv, "t:m:n:x:c:w:r:H:D:d:qh", bench_options, NULL)) != -1) {
        switch (ch) {
        case 't':
            snprintf(O.tests, sizeof O.tests, "%s", optarg);
            O.tests_given = 1;
            break;
        case 'm':
            if (bench_parse_modes(optarg) != 0)
                exit(2);
            break;
        case 'n': O.requests = bench_num(optarg, "-n"); break;
        case 'x':
            O.multiply = strtod(optarg, NULL);
            if (O.multiply <= 0) {
                fprintf(stderr, "volley-bench: -x wants a positive factor\n");
                exit(2);
            }
            break;
        case 'c': O.conns = (int)bench_num(optarg, "-c"); break;
        case 'w': O.window = (int)bench_num(optarg, "-w"); break;
        case OPT_THREADS: O.threads = (int)bench_num(optarg, "--threads"); break;
        case 'H': O.hosts = (int)bench_num(optarg, "-H"); break;
        case 'D': E.delay_ms = (unsigned)bench_num(optarg, "-D"); break;
        case OPT_SLEEP: E.sleep_ms = (unsigned)bench_num(optarg, "--sleep-ms"); break;
        case 'd': E.data_size = (size_t)bench_num(optarg, "-d"); break;
        case OPT_KEYS: E.keys = (size_t)bench_num(optarg, "--keys"); break;
        case OPT_ROWS: E.rows = (size_t)bench_num(optarg, "--rows"); break;
        case OPT_SCALE: O.scale = 1; break;
        case OPT_SOAK: O.soak = 1; break;
        case OPT_NOREF: O.ref = 0; break;
        case OPT_NOPOOL: bench_async_no_pool = 1; break;
        case OPT_NOFORK: bench_no_fork = 1; break;
        case OPT_ONCE: O.once = 1; break;
        case 'r': O.reps = (int)bench_num(optarg, "-r"); break;
        case OPT_KEEP: O.keep = 1; break;
        case OPT_TIME: O.seconds = bench_real(optarg, "--time"); break;
        case OPT_RATE: O.rate = bench_real(optarg, "--rate"); break;
        case OPT_WARMUP: O.warmup = bench_num(optarg, "--warmup"); break;
        case OPT_REDIS: bench_parse_redis_url(optarg); break;
        case OPT_MYSQL: bench_parse_mysql_url(optarg); break;
        case OPT_JSON: O.json = optarg; break;
        case OPT_CSV: O.csv = optarg; break;
        case 'q': O.quiet = 1; break;
        case OPT_CHECK: O.check = 1; break;
        case 'h': fputs(bench_usage, stdout); exit(0);
        default: fputs(bench_usage, stderr); exit(2);
        }
    }
    if (optind < argc) {
        fprintf(stderr, "volley-bench: unexpected argument '%s'\n", argv[optind]);
        exit(2);
    }
    bench_check_opts();
}

/* The checks of the flags together, after getopt; exits 2 on a bad
 * combination, or 0 for --check-args. */
static void bench_check_opts(void)
{
    bench_tests_for_servers();
    if (bench_check_tests() != 0)
        exit(2);
    if (bench_has_test("redis-delay") && strcmp(E.redis_host, "127.0.0.1") != 0) {
        fprintf(stderr, "volley-bench: redis-delay needs Redis on 127.0.0.1 (its proxy "
                        "forwards to loopback)\n");
        exit(2);
    }
    if (E.data_size > 1000 && bench_has_test("redis-hash")) {
        fprintf(stderr, "volley-bench: redis-hash needs --data-size <= 1000\n");
        exit(2);
    }
    if (O.reps > 99) {
        fprintf(stderr, "volley-bench: -r is at most 99\n");
        exit(2);
    }
    if (O.conns > 100000 || O.window > 10000000) {
        fprintf(stderr, "volley-bench: -c or -w is too big\n");
        exit(2);
    }
    if (O.check)
        exit(0);
}

static int bench_needs(const bench_plan *p, int backend, int proxy)
{
    for (size_t k = 0; k < p->n; k++)
        if (p->rs[k].c.backend == backend && (!proxy || p->rs[k].c.via_proxy))
            return 1;
    return 0;
}

/* The row of scenario `name` in `mode` that is not one of the async rows
 * at another mode's load, or NULL. */
static const bench_result *bench_row(const bench_plan *p, const char *name, int mode)
{
    for (size_t k = 0; k < p->n; k++) {
        const bench_result *r = &p->rs[k];
        if (r->c.mode == mode && r->c.equal == 0 && r->c.label[0] == '\0' &&
            strcmp(r->c.name, name) == 0)
            return r;
    }
    return NULL;
}

/* The async row of scenario `name` at the load of `mode`, or NULL. */
static const bench_result *bench_row_at(const bench_plan *p, const char *name, int mode)
{
    for (size_t k = 0; k < p->n; k++)
        if (p->rs[k].c.equal == mode + 1 && strcmp(p->rs[k].c.name, name) == 0)
            return &p->rs[k];
    return NULL;
}

/* What row r's speedup compares with: the threads row when r keeps as many
 * requests in flight as it does (equal concurrency), the sync row (1 in
 * flight) otherwise; NULL for the sync row itself. */
static const bench_result *bench_baseline(const bench_plan *p, const bench_result *r)
{
    if (r->c.mode == BENCH_SYNC)
        return NULL;
    const bench_result *t = bench_row(p, r->c.name, BENCH_THREADS);
    if (r->c.mode != BENCH_THREADS && r->c.window > 1 && t && t->c.window == r->c.window)
        return t;
    return bench_row(p, r->c.name, BENCH_SYNC);
}

/* Each row's speedup and what it is over ("sync@1", "threads@8"), for the
 * rows whose baseline has run. */
static void bench_speedups(bench_plan *p)
{
    for (size_t k = 0; k < p->n; k++) {
        bench_result *r = &p->rs[k];
        const bench_result *b = bench_baseline(p, r);
        r->speedup = 0;
        r->vs[0] = '\0';
        if (b == NULL || b->ops_per_sec <= 0 || r->ops_per_sec <= 0)
            continue;
        r->speedup = r->ops_per_sec / b->ops_per_sec;
        snprintf(r->vs, sizeof r->vs, "%s@%d", bench_mode_names[b->c.mode], b->c.window);
    }
}

static double bench_ratio(const bench_result *a, const bench_result *b)
{
    return a && b && a->ops_per_sec > 0 && b->ops_per_sec > 0 ? a->ops_per_sec / b->ops_per_sec
                                                               : 0;
}

/* Appends " LABEL p50/p99 A/B us" for r. */
static int bench_put_latency(char *line, size_t cap, int len, const char *label,
                             const bench_result *r)
{
    if (r == NULL || (size_t)len >= cap)
        return len;
    return len + snprintf(line + len, cap - (size_t)len, " %s %" PRIu64 "/%" PRIu64 " us;",
                          label, r->p50, r->p99);
}

/* Open loop: every row sends at the same rate, so the verdict compares
 * latency (p50/p99 from the intended send time) under that load. */
static void bench_verdict_open_loop(FILE *f, const char *name, const bench_result *sync,
                                    const bench_result *thr, const bench_result *a1,
                                    const bench_result *an, const bench_result *own)
{
    char line[512], label[48];
    int len = snprintf(line, sizeof line, "verdict: %s: open loop at %.0f/s, p50/p99:", name,
                       own->c.rate);
    len = bench_put_latency(line, sizeof line, len, "sync", sync);
    if (thr) {
        snprintf(label, sizeof label, "threads@%d", thr->c.window);
        len = bench_put_latency(line, sizeof line, len, label, thr);
    }
    len = bench_put_latency(line, sizeof line, len, "async@1", a1);
    if (an) {
        snprintf(label, sizeof label, "async@%d", an->c.window);
        len = bench_put_latency(line, sizeof line, len, label, an);
    }
    snprintf(label, sizeof label, "async@%d", own->c.window);
    bench_put_latency(line, sizeof line, len, label, own);
    fprintf(f, "%s\n", line);
}

/* The verdict of scenario `name` at equal concurrency, one line: async at
 * 1 in flight against sync, at the threads' load against sync and threads
 * (and its CPU per request against the threads'), and at its own load. */
static void bench_verdict(FILE *f, const bench_plan *p, const char *name)
{
    const bench_result *sync = bench_row(p, name, BENCH_SYNC);
    const bench_result *thr = bench_row(p, name, BENCH_THREADS);
    const bench_result *a1 = bench_row_at(p, name, BENCH_SYNC);
    const bench_result *an = bench_row_at(p, name, BENCH_THREADS);
    const bench_result *own = bench_row(p, name, BENCH_ASYNC);
    char line[512];
    if (own && own->c.rate > 0) {
        bench_verdict_open_loop(f, name, sync, thr, a1, an, own);
        return;
    }
    int len = snprintf(line, sizeof line, "verdict: %s: async", name);
    if (a1 && bench_ratio(a1, sync) > 0)
        len += snprintf(line + len, sizeof line - (size_t)len, " at 1 in flight %.2fx sync;",
                        bench_ratio(a1, sync));
    if (an && bench_ratio(an, thr) > 0) {
        len += snprintf(line + len, sizeof line - (size_t)len,
                        " at %d in flight %.1fx sync, %.2fx threads", an->c.window,
                        bench_ratio(an, sync), bench_ratio(an, thr));
        if (thr->cpu_us_per_op > 0)
            len += snprintf(line + len, sizeof line - (size_t)len,
                            ", using %.2fx the CPU per request", an->cpu_us_per_op /
                            thr->cpu_us_per_op);
        len += snprintf(line + len, sizeof line - (size_t)len, ";");
    }
    if (own && bench_ratio(own, sync) > 0)
        len += snprintf(line + len, sizeof line - (size_t)len,
                        " at its own load (%d connections, %d in flight) %.1fx sync",
                        own->c.conns, own->c.window, bench_ratio(own, sync));
    if (a1 || an)
        fprintf(f, "%s\n", line);
}

static int bench_planned(const bench_plan *p, const char *name)
{
    for (size_t k = 0; k < p->n; k++)
        if (strcmp(p->rs[k].c.name, name) == 0)
            return 1;
    return 0;
}

/* Drops every run of scenario `name` from the plan. */
static void bench_plan_drop(bench_plan *p, const char *name)
{
    size_t o = 0;
    for (size_t k = 0; k < p->n; k++)
        if (strcmp(p->rs[k].c.name, name) != 0)
            p->rs[o++] = p->rs[k];
    p->n = o;
}

/* Why redis-tls-p16 did not run ("" when it did), and whether that is a
 * skip (no TLS server, or a library without rediss://: not an error) or a
 * failed setup (an error). */
static char bench_tls_why[400];
static int bench_tls_failed;

/* Writes the GET keys to the TLS server, through volley (hiredis 0.14 has
 * no TLS), which also tells whether this library speaks rediss://. When it
 * cannot run, its runs leave the plan and the reason is printed. Returns
 * 0, or -1 when the setup failed. */
static int bench_tls_prepare(bench_plan *p)
{
    char url[2048], msg[300];
    if (!bench_planned(p, "redis-tls-p16"))
        return 0;
    if (E.redis_tls_port == 0 || E.tls_cacert[0] == '\0') {
        snprintf(bench_tls_why, sizeof bench_tls_why,
                 "no TLS redis-server (VL_TEST_REDIS_TLS_PORT and VL_TEST_TLS_DIR are not both "
                 "set)");
    } else {
        bench_redis_url(&E, 1, E.redis_tls_port, url, sizeof url);
        int rc = bench_async_redis_fill(&E, url, msg, sizeof msg);
        if (rc == 0)
            return 0;
        bench_tls_failed = rc < 0;
        snprintf(bench_tls_why, sizeof bench_tls_why, "%s: %s",
                 rc > 0 ? "this library refuses rediss://"
                        : "writing the data over rediss:// failed",
                 msg);
    }
    bench_plan_drop(p, "redis-tls-p16");
    printf("\nredis-tls-p16: %s: %s\n", bench_tls_failed ? "FAILED" : "skipped (not an error)",
           bench_tls_why);
    return bench_tls_failed ? -1 : 0;
}

/* Why the cluster scenarios did not run ("" when they did), and whether
 * that is a skip (no cluster in the environment) or a failed setup. */
static char bench_cluster_why[400];
static int bench_cluster_failed;

/* Writes the GET keys to the cluster. When there is no cluster, or writing
 * fails, the cluster runs leave the plan and the reason is printed.
 * Returns 0, or -1 when the setup failed. */
static int bench_cluster_prepare(bench_plan *p)
{
    static const char *const names[] = {"cluster-get", "cluster-set", "cluster-refresh"};
    char msg[300];
    int planned = 0;
    for (size_t k = 0; k < 3; k++)
        planned |= bench_planned(p, names[k]);
    if (!planned)
        return 0;
    if (E.cluster_url[0] == '\0') {
        snprintf(bench_cluster_why, sizeof bench_cluster_why,
                 "no Redis Cluster (VL_TEST_CLUSTER_URL is not set)");
    } else if (bench_cluster_fill(&E, msg, sizeof msg) != 0) {
        bench_cluster_failed = 1;
        snprintf(bench_cluster_why, sizeof bench_cluster_why,
                 "writing the data to the cluster failed: %s", msg);
    } else {
        return 0;
    }
    for (size_t k = 0; k < 3; k++)
        bench_plan_drop(p, names[k]);
    printf("\ncluster scenarios: %s: %s\n",
           bench_cluster_failed ? "FAILED" : "skipped (not an error)", bench_cluster_why);
    return bench_cluster_failed ? -1 : 0;
}

/* The run of scenario `name` in `mode` (tls: over rediss://; no_pool: the
 * "async conns" row), or NULL. */
static const bench_result *bench_find(const bench_plan *p, const char *name, int mode, int tls,
                                      int no_pool)
{
    for (size_t k = 0; k < p->n; k++) {
        const bench_result *r = &p->rs[k];
        if (strcmp(r->c.name, name) == 0 && r->c.mode == mode && r->c.tls == tls &&
            r->c.no_pool == no_pool)
            return r;
    }
    return NULL;
}

/* The run of cluster scenario `name` over the cluster (cluster 1) or on one
 * server (0), refreshing or not, or NULL. */
static const bench_result *bench_find_cluster(const bench_plan *p, const char *name, int cluster,
                                              int refresh)
{
    for (size_t k = 0; k < p->n; k++) {
        const bench_result *r = &p->rs[k];
        if (strcmp(r->c.name, name) == 0 && r->c.mode == BENCH_ASYNC &&
            r->c.cluster == cluster && r->c.refresh == refresh)
            return r;
    }
    return NULL;
}

/* The mysql-bulk run that inserts row by row (bulk 0) or in bulk calls
 * (bulk 1), or NULL. */
static const bench_result *bench_find_bulk(const bench_plan *p, int bulk)
{
    for (size_t k = 0; k < p->n; k++)
        if (p->rs[k].c.op == BENCH_OP_BULK && (p->rs[k].c.chunk > 1) == bulk)
            return &p->rs[k];
    return NULL;
}

/* Why a run cannot be used for a target, or NULL when it can. */
static const char *bench_unusable(const bench_result *r)
{
    if (r == NULL)
        return "did not run";
    if (r->errors)
        return "had errors";
    if (r->ops_per_sec <= 0)
        return "failed";
    return NULL;
}

/* Appends ", LABEL / DEN = R" to t's note when r is usable. */
static void bench_target_also(bench_target *t, const bench_result *r, const char *den_name,
                              const bench_result *den)
{
    if (bench_unusable(r) || bench_unusable(den))
        return;
    size_t len = strlen(t->note);
    snprintf(t->note + len, sizeof t->note - len, "%s%s / %s = %.2fx", len ? "; " : "",
             bench_label(r), den_name, r->ops_per_sec / den->ops_per_sec);
}

/* num / den of scenario `name` against `bound`. */
static void bench_target_ratio(bench_target *t, const char *name, const bench_result *num,
                               const char *num_name, const bench_result *den,
                               const char *den_name, double bound)
{
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    snprintf(t->what, sizeof t->what, "%s %s / %s", name, num_name, den_name);
    t->bound = bound;
    const char *bad = bench_unusable(num);
    const char *which = num_name;
    if (bad == NULL) {
        bad = bench_unusable(den);
        which = den_name;
    }
    if (bad) {
        t->status = BENCH_TARGET_UNMEASURED;
        snprintf(t->note, sizeof t->note, "the %s run %s", which, bad);
        return;
    }
    t->value = num->ops_per_sec / den->ops_per_sec;
    t->status = t->value >= bound ? BENCH_TARGET_MET : BENCH_TARGET_NOT_MET;
}

/* Bytes per request in flight in mode m, from the soak-window runs at the
 * smallest and the biggest window (peak RSS difference over window
 * difference). Returns -1 when they did not both run cleanly. */
static double bench_bytes_in_flight(const bench_plan *p, int m, const bench_result **lo,
                                    const bench_result **hi)
{
    *lo = *hi = NULL;
    for (size_t k = 0; k < p->n; k++) {
        const bench_result *r = &p->rs[k];
        if (strcmp(r->c.name, "soak-window") != 0 || r->c.mode != m)
            continue;
        if (*lo == NULL || r->c.window < (*lo)->c.window)
            *lo = r;
        if (*hi == NULL || r->c.window > (*hi)->c.window)
            *hi = r;
    }
    if (*lo == NULL || *hi == NULL || (*hi)->c.window <= (*lo)->c.window ||
        bench_unusable(*lo) || bench_unusable(*hi))
        return -1;
    return (double)((*hi)->peak_rss_kb - (*lo)->peak_rss_kb) * 1024.0 /
           (double)((*hi)->c.window - (*lo)->c.window);
}

/* The targets of the scenarios this run planned. Returns how many. */
static size_t bench_targets(const bench_plan *p, bench_target *ts)
{
    size_t n = 0;
    static const struct {
        const char *name, *ref;
        double bound;
    } vs_ref[] = {
        {"redis-get-p16", "redis-benchmark -c 50 -P 16", 1.0},
        {"redis-get-p1000", "redis-benchmark -c 1 -P 1000", 0.8},
    };
    for (size_t k = 0; k < sizeof vs_ref / sizeof vs_ref[0]; k++) {
        const char *name = vs_ref[k].name;
        if (!bench_has_test(name))
            continue;
        bench_target *t = &ts[n++];
        const bench_result *ref = bench_find(p, name, BENCH_REF, 0, 0);
        bench_target_ratio(t, name, bench_find(p, name, BENCH_ASYNC, 0, 0), "async", ref,
                           vs_ref[k].ref, vs_ref[k].bound);
        if (!O.ref && t->status == BENCH_TARGET_UNMEASURED)
            snprintf(t->note, sizeof t->note, "no redis-benchmark run (--no-ref)");
        /* For comparison: async on plain connections, and raw. */
        bench_target_also(t, bench_find(p, name, BENCH_ASYNC, 0, 1), vs_ref[k].ref, ref);
        bench_target_also(t, bench_find(p, name, BENCH_RAW, 0, 0), vs_ref[k].ref, ref);
    }
    /* MySQL: volley's async against the hand-written non-blocking loop on
     * the same connections and window. */
    static const char *const vs_raw[] = {"mysql-select1", "mysql-point"};
    for (size_t k = 0; k < sizeof vs_raw / sizeof vs_raw[0]; k++) {
        if (!bench_has_test(vs_raw[k]))
            continue;
        bench_target *t = &ts[n++];
        const bench_result *async = bench_find(p, vs_raw[k], BENCH_ASYNC, 0, 0);
        const bench_result *ref = bench_find(p, vs_raw[k], BENCH_REF, 0, 0);
        bench_target_ratio(t, vs_raw[k], async, "async", bench_find(p, vs_raw[k], BENCH_RAW, 0, 0),
                           "raw", 0.95);
        bench_target_also(t, async, "mariadb-slap -c 8", ref);
    }
    if (bench_has_test("mysql-bulk")) {
        bench_target *t = &ts[n++];
        bench_target_ratio(t, "mysql-bulk", bench_find_bulk(p, 1), "bulk",
                           bench_find_bulk(p, 0), "row-by-row", 10.0);
    }
    if (bench_has_test("soak-window") || bench_has_test("soak") || O.soak) {
        bench_target *t = &ts[n++];
        const bench_result *lo, *hi, *rlo, *rhi;
        memset(t, 0, sizeof *t);
        snprintf(t->name, sizeof t->name, "soak-window");
        snprintf(t->what, sizeof t->what, "memory per request in flight: volley (async less "
                                           "the bench's own %zu B)", bench_slot_bytes);
        t->bytes = 1;
        t->bound = 160;
        t->value = bench_bytes_in_flight(p, BENCH_ASYNC, &lo, &hi);
        if (t->value >= 0)
            t->value -= (double)bench_slot_bytes;
        double raw = bench_bytes_in_flight(p, BENCH_RAW, &rlo, &rhi);
        if (t->value < 0) {
            t->status = BENCH_TARGET_UNMEASURED;
            snprintf(t->note, sizeof t->note,
                     "the async soak-window runs did not both run cleanly");
            t->value = 0;
        } else {
            t->status = t->value <= t->bound ? BENCH_TARGET_MET : BENCH_TARGET_NOT_MET;
            snprintf(t->note, sizeof t->note,
                     "async %.0f B in all; peak RSS %ld KiB at window %d, %ld KiB at %d",
                     t->value + (double)bench_slot_bytes, lo->peak_rss_kb, lo->c.window,
                     hi->peak_rss_kb, hi->c.window);
            if (raw >= 0) {
                size_t len = strlen(t->note);
                snprintf(t->note + len, sizeof t->note - len, "; raw %.0f B", raw);
            }
        }
    }
    if (bench_has_test("cluster-refresh")) {
        /* The longest loop iteration while refreshing, in CPU time (the
         * wall clock counts the scheduler's doing too). The note gives the
         * baseline without refreshes, and what the iterations took beyond
         * their replies' share: with 1000 in flight one iteration may
         * handle hundreds of replies, which is work, not a stall. */
        bench_target *t = &ts[n++];
        const bench_result *on = bench_find_cluster(p, "cluster-refresh", 1, 1);
        const bench_result *off = bench_find_cluster(p, "cluster-refresh", 1, 0);
        const char *bad = bench_unusable(on);
        memset(t, 0, sizeof *t);
        snprintf(t->name, sizeof t->name, "cluster-refresh");
        snprintf(t->what, sizeof t->what, "cluster-refresh longest loop iteration (CPU) while "
                                           "refreshing, %d in flight",
                 on != NULL ? on->c.window : 1000);
        t->ms = 1;
        t->bound = 1.0;
        if (bench_cluster_why[0]) {
            t->status = bench_cluster_failed ? BENCH_TARGET_UNMEASURED : BENCH_TARGET_SKIPPED;
            snprintf(t->note, sizeof t->note, "%s", bench_cluster_why);
        } else if (bad != NULL || on->refreshes == 0) {
            t->status = BENCH_TARGET_UNMEASURED;
            snprintf(t->note, sizeof t->note, "the refreshing run %s",
                     bad != NULL ? bad : "completed no refresh");
        } else {
            t->value = on->iter_cpu_max_ms;
            t->status = t->value <= t->bound ? BENCH_TARGET_MET : BENCH_TARGET_NOT_MET;
            snprintf(t->note, sizeof t->note,
                     "%" PRIu64 " refreshes; beyond its replies' share %.3f ms; wall clock "
                     "%.3f ms; a 1 ms timer %.3f ms late", on->refreshes, on->iter_extra_ms,
                     on->iter_max_ms, on->timer_late_ms);
            if (bench_unusable(off) == NULL) {
                size_t len = strlen(t->note);
                snprintf(t->note + len, sizeof t->note - len,
                         ". Without refreshes: CPU %.3f, beyond replies %.3f, wall %.3f, "
                         "timer %.3f late", off->iter_cpu_max_ms, off->iter_extra_ms,
                         off->iter_max_ms, off->timer_late_ms);
            }
        }
    }
    if (bench_has_test("redis-tls-p16")) {
        bench_target *t = &ts[n];
        const bench_result *tls = bench_find(p, "redis-tls-p16", BENCH_ASYNC, 1, 0);
        bench_target_ratio(t, "redis-tls-p16", tls, "async rediss",
                           bench_find(p, "redis-tls-p16", BENCH_ASYNC, 0, 0), "async redis", 0.7);
        if (bench_tls_why[0]) {
            t->status = bench_tls_failed ? BENCH_TARGET_UNMEASURED : BENCH_TARGET_SKIPPED;
            snprintf(t->note, sizeof t->note, "%s", bench_tls_why);
        } else {
            const bench_result *ref = bench_find(p, "redis-tls-p16", BENCH_REF, 1, 0);
            bench_target_also(t, tls, bench_label(ref ? ref : tls), ref);
        }
        n++;
    }
    return n;
}

/* Whether the servers the plan needs are in the environment; prints why
 * not. */
static int bench_check_servers(const bench_plan *plan)
{
    int max_hosts = 0;
    for (size_t k = 0; k < plan->n; k++)
        if (plan->rs[k].c.backend == BENCH_REDIS && plan->rs[k].c.hosts > max_hosts)
            max_hosts = plan->rs[k].c.hosts;
    if (bench_needs(plan, BENCH_REDIS, 0) && max_hosts > E.nredis) {
        fprintf(stderr, "volley-bench: %d Redis hosts wanted, %d in VL_TEST_REDIS_PORTS "
                        "(start more: VL_BENCH_HOSTS=%d bench/run.sh)\n",
                max_hosts, E.nredis, max_hosts);
        return -1;
    }
    if (bench_needs(plan, BENCH_REDIS, 0) && E.nredis == 0) {
        fprintf(stderr, "volley-bench: no Redis server: set VL_TEST_REDIS_PORTS "
                        "(bench/run.sh does)\n");
        return -1;
    }
    if (bench_needs(plan, BENCH_MYSQL, 0) && E.mysql_port == 0 && E.mysql_sock == NULL) {
        fprintf(stderr, "volley-bench: no MySQL server: set VL_TEST_MYSQL_PORT "
                        "(bench/run.sh does)\n");
        return -1;
    }
    return 0;
}

/* Writes the data every run reads and starts the delaying proxy. Returns
 * 0, 1 when a scenario's own setup failed (the others still run), or -1
 * when nothing can run. */
static int bench_setup(bench_plan *plan)
{
    int status = 0;
    if (!O.quiet)
        fprintf(stderr, "volley-bench: writing the data (%zu keys on %d Redis hosts, %zu rows)\n",
                E.keys, E.nredis, E.rows);
    if (bench_needs(plan, BENCH_REDIS, 0))
        for (int h = 0; h < E.nredis; h++)
            if (bench_redis_setup(&E, E.redis_ports[h]) != 0)
                return -1;
    if (bench_needs(plan, BENCH_MYSQL, 0) && bench_mysql_setup(&E) != 0)
        return -1;
    if (bench_tls_prepare(plan) != 0)
        status = 1;
    if (bench_cluster_prepare(plan) != 0)
        status = 1;
    if (bench_needs(plan, BENCH_REDIS, 1)) {
        int pid = bench_proxy_start(E.redis_ports, E.nredis, E.delay_ms * 1000u, E.proxy_ports);
        if (pid < 0) {
            fprintf(stderr, "volley-bench: cannot start the delaying proxy\n");
            return -1;
        }
        bench_proxy_pid = pid;
    }
    return status;
}

/* The title of the table of row r's scenario. */
static void bench_title(const bench_result *r, char *title, size_t cap)
{
    const char *kind = bench_kind_name(r->c.kind);
    const char *backend = r->c.backend == BENCH_REDIS ? "redis" : "mysql";
    if (r->c.via_proxy)
        snprintf(title, cap, "%s (%s, %s; +%u ms round trip per request, added by a user-space "
                 "delaying proxy: no netem here)", r->c.name, kind, backend, E.delay_ms);
    else if (r->c.tls || strcmp(r->c.name, "redis-tls-p16") == 0)
        snprintf(title, cap, "%s (%s, redis; over rediss:// to the TLS server, and over "
                 "redis://)", r->c.name, kind);
    else if (strcmp(r->c.name, "cluster-refresh") == 0)
        snprintf(title, cap, "%s (%s, redis; over the cluster, %d in flight, with refreshes "
                 "back to back and without)", r->c.name, kind, r->c.window);
    else if (r->c.loop_group)
        snprintf(title, cap, "%s (%s, redis; jobs of 20 GETs parsed, %d in flight, through a "
                 "group of one loop per CPU, and on one loop)", r->c.name, kind, r->c.window);
    else if (strncmp(r->c.name, "cluster-", 8) == 0)
        snprintf(title, cap, "%s (%s, redis; over the 3-primary cluster, and on one server)",
                 r->c.name, kind);
    else if (r->c.op == BENCH_OP_SLEEP)
        snprintf(title, cap, "%s (%s, mysql; SELECT SLEEP(%u ms))", r->c.name, kind,
                 E.sleep_ms);
    else
        snprintf(title, cap, "%s (%s, %s)", r->c.name, kind, backend);
}

/* --time: sizes row r's request count so that it runs about O.seconds:
 * probe runs grow (at least 2x, at most 100x a step) until one lasts
 * 0.2 s, and its rate gives the count. A failed probe leaves the count as
 * planned (the row's own run then reports the failure). */
static void bench_size_for_time(bench_result *r)
{
    uint64_t n = r->c.window > 100 ? (uint64_t)r->c.window : 100;
    if (O.seconds <= 0 || r->c.rate > 0 || r->c.kind == BENCH_KIND_MEMORY)
        return;
    for (int step = 0; step < 12; step++) {
        bench_result probe = *r;
        probe.c.requests = n;
        if (bench_execute(&probe) != 0 || probe.errors || probe.ops_per_sec <= 0)
            return;
        if (probe.seconds >= 0.2 || step == 11) {
            double want = probe.ops_per_sec * O.seconds;
            r->c.requests = want < 1 ? 1 : (uint64_t)want;
            return;
        }
        double grow = probe.seconds > 0 ? 0.3 / probe.seconds : 100;
        n = (uint64_t)((double)n * (grow < 2 ? 2 : grow > 100 ? 100 : grow));
    }
}

/* --warmup: O.warmup of row r's requests, closed loop, untimed and
 * discarded. Returns 0, or -1 when they failed. */
static int bench_warmup(const bench_result *r)
{
    bench_result warm = *r;
    if (O.warmup <= 0 || r->c.mode == BENCH_REF)
        return 0;
    warm.c.requests = (uint64_t)O.warmup;
    warm.c.rate = 0;
    if (bench_execute(&warm) == 0 && warm.errors == 0)
        return 0;
    fprintf(stderr, "volley-bench: the warmup of %s %s failed\n", r->c.name, bench_label(r));
    return -1;
}

/* Runs row k of the plan, and with it, interleaved, every later row of its
 * scenario that runs as many times (more than once). A row that has run
 * has runs > 0. Sets *status to 1 on any failure. */
static void bench_run_rows(bench_plan *plan, size_t k, int *status)
{
    bench_result *r = &plan->rs[k];
    int reps = bench_reps(&r->c);
    bench_result *block[64];
    size_t n = 0;
    for (size_t j = k; j < plan->n && strcmp(plan->rs[j].c.name, r->c.name) == 0 && n < 64; j++)
        if (j == k || (reps > 1 && plan->rs[j].runs == 0 && bench_reps(&plan->rs[j].c) == reps))
            block[n++] = &plan->rs[j];
    for (size_t i = 0; i < n; i++) {
        bench_size_for_time(block[i]);
        if (bench_warmup(block[i]) != 0)
            *status = 1;
    }
    if (reps > 1 ? bench_run_repeated(block, n, reps) != 0 : bench_execute(r) != 0)
        *status = 1;
    if (reps <= 1) {
        r->runs = 1;
        r->ops_min = r->ops_max = r->ops_per_sec;
    }
}

/* Runs the plan, printing each scenario's table as its rows complete and
 * its verdict after its last row. Returns 0, or 1 when a run failed. */
static int bench_run_plan(bench_plan *plan)
{
    int status = 0;
    for (size_t k = 0; k < plan->n; k++) {
        bench_result *r = &plan->rs[k];
        if (r->runs == 0)
            bench_run_rows(plan, k, &status);
        if (r->errors)
            status = 1;
        bench_speedups(plan);
        if (k == 0 || strcmp(plan->rs[k - 1].c.name, r->c.name) != 0) {
            char title[200];
            bench_title(r, title, sizeof title);
            bench_table_header(stdout, title);
        }
        bench_table_row(stdout, r);
        if (k + 1 == plan->n || strcmp(plan->rs[k + 1].c.name, r->c.name) != 0)
            bench_verdict(stdout, plan, r->c.name);
    }
    return status;
}

/* The redis-delay line and the soak figures. */
static void bench_print_latency_memory(const bench_plan *plan)
{
    /* The latency target: over K hosts, async must be K times sync. */
    for (size_t k = 0; k < plan->n; k++) {
        const bench_result *r = &plan->rs[k];
        double x = bench_ratio(r, bench_row(plan, r->c.name, BENCH_SYNC));
        if (r->c.via_proxy && r->c.mode == BENCH_ASYNC && r->c.equal == 0 && x > 0)
            printf("\nredis-delay: async over sync on %d hosts: %.2fx (target >= %.2fx): %s\n",
                   r->c.hosts, x, 0.95 * r->c.hosts, x >= 0.95 * r->c.hosts ? "met" : "NOT met");
    }
    for (int m = BENCH_ASYNC; m <= BENCH_RAW; m++) {
        const bench_result *w0, *w1;
        double b = bench_bytes_in_flight(plan, m, &w0, &w1);
        if (w0 && w1 && w1->c.window > w0->c.window && b > -1)
            printf("soak: %s: %.0f bytes per request in flight (peak RSS %ld KiB at window %d, "
                   "%ld KiB at window %d)\n", bench_mode_names[m], b, w0->peak_rss_kb,
                   w0->c.window, w1->peak_rss_kb, w1->c.window);
    }
    for (size_t k = 0; k < plan->n; k++) {
        const bench_result *r = &plan->rs[k];
        if (strcmp(r->c.name, "soak-10m") == 0)
            printf("soak: RSS %ld KiB after 1M requests, %ld KiB after %" PRIu64 " (%+ld KiB)\n",
                   r->rss_1m_kb, r->rss_end_kb, r->c.requests, r->rss_end_kb - r->rss_1m_kb);
    }
}

/* The loop-group row of one loop (loop_group 1) or of the group (2), or
 * NULL. */
static const bench_result *bench_find_loop_group(const bench_plan *p, int loop_group)
{
    for (size_t k = 0; k < p->n; k++)
        if (p->rs[k].c.loop_group == loop_group)
            return &p->rs[k];
    return NULL;
}

/* Bulk against row by row, the cluster against one server, and the loop
 * group against one loop. */
static void bench_print_ratios(const bench_plan *plan)
{
    static const char *const names[] = {"cluster-get", "cluster-set"};
    const bench_result *one = bench_find_bulk(plan, 0), *bulk = bench_find_bulk(plan, 1);
    if (one && bulk && !bench_unusable(one) && !bench_unusable(bulk))
        printf("\nmysql-bulk: row by row %.0f rows/s (window %d), bulk %.0f rows/s (%d rows "
               "per call, window %d); bulk: %.1fx row-by-row\n", one->ops_per_sec,
               one->c.window, bulk->ops_per_sec, bulk->c.chunk, bulk->c.window,
               bulk->ops_per_sec / one->ops_per_sec);
    for (size_t k = 0; k < 2; k++) {
        const bench_result *cl = bench_find_cluster(plan, names[k], 1, 0);
        const bench_result *srv = bench_find_cluster(plan, names[k], 0, 0);
        if (cl && srv && !bench_unusable(cl) && !bench_unusable(srv))
            printf("%s%s: over the cluster's 3 primaries %.0f ops/s, on one server %.0f "
                   "ops/s (window %d, %d connections a server): %.2fx one server\n",
                   k == 0 ? "\n" : "", names[k], cl->ops_per_sec, srv->ops_per_sec,
                   cl->c.window, cl->c.conns, cl->ops_per_sec / srv->ops_per_sec);
    }
    const bench_result *grp = bench_find_loop_group(plan, 2);
    const bench_result *lone = bench_find_loop_group(plan, 1);
    if (grp && lone && !bench_unusable(grp) && !bench_unusable(lone))
        printf("\nloop-group: group of %d loops %.0f jobs/s, one loop %.0f jobs/s: %.2fx one "
               "loop\n", grp->loops, grp->ops_per_sec, lone->ops_per_sec,
               grp->ops_per_sec / lone->ops_per_sec);
}

/* Removes the keys and tables the runs wrote, unless --keep. Returns 0 or
 * -1. */
static int bench_clean(const bench_plan *plan)
{
    bench_cleanup_what w;
    if (O.keep)
        return 0;
    memset(&w, 0, sizeof w);
    w.redis = bench_needs(plan, BENCH_REDIS, 0);
    w.mysql = bench_needs(plan, BENCH_MYSQL, 0);
    w.quiet = O.quiet;
    for (size_t k = 0; k < plan->n; k++) {
        w.tls |= plan->rs[k].c.tls && plan->rs[k].c.mode == BENCH_ASYNC;
        w.cluster |= plan->rs[k].c.cluster;
    }
    return bench_cleanup(&E, &w);
}

/* The targets, the totals, the cleanup and the files. Returns 0, or 1
 * when something could not be written or removed. */
static int bench_finish(const bench_plan *plan, uint64_t t0)
{
    bench_target targets[16];
    size_t ntargets = bench_targets(plan, targets);
    uint64_t errors = 0;
    int status = 0;
    if (ntargets > 0)
        putchar('\n');
    for (size_t k = 0; k < ntargets; k++)
        bench_target_line(stdout, &targets[k]);
    for (size_t k = 0; k < plan->n; k++)
        errors += plan->rs[k].errors;
    printf("\n%zu runs in %.1f s, %" PRIu64 " errors\n", plan->n,
           (double)(bench_now_us() - t0) / 1e6, errors);
    if (bench_clean(plan) != 0)
        status = 1;
    if (O.csv && bench_write_csv(O.csv, plan->rs, plan->n, targets, ntargets) != 0)
        status = 1;
    if (O.json && bench_write_json(O.json, plan->rs, plan->n, targets, ntargets, &E) != 0)
        status = 1;
    return status;
}

int main(int argc, char **argv)
{
    bench_plan plan;
    setvbuf(stdout, NULL, _IOLBF, 0);
    bench_env_init();
    bench_parse(argc, argv);
    bench_env_sleep(&E);
    memset(&plan, 0, sizeof plan);
    bench_build_plan(&plan);
    if (plan.n == 0) {
        fprintf(stderr, "volley-bench: nothing to run\n");
        return 2;
    }
    if (bench_check_servers(&plan) != 0)
        return 2;
    signal(SIGINT, bench_on_signal);
    signal(SIGTERM, bench_on_signal);
    signal(SIGPIPE, SIG_IGN);

    int status = bench_setup(&plan);
    if (status < 0)
        return 1;
    uint64_t t0 = bench_now_us();
    status |= bench_run_plan(&plan);
    bench_proxy_stop(bench_proxy_pid);
    bench_proxy_pid = 0;
    bench_print_latency_memory(&plan);
    bench_print_ratios(&plan);
    status |= bench_finish(&plan, t0);
    free(plan.rs);
    return status;
}
