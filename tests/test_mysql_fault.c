/* SPDX-License-Identifier: BSD-3-Clause */
/* tests/test_mysql_fault.c - a MySQL pool under real faults of the harness
 * mariadbd: connections KILLed mid-query, idle connections expired by
 * wait_timeout, the server stopped (SIGSTOP) for longer than every timeout
 * and continued, the server killed (-9) and restarted, connects refused
 * together; and a process with the default SIGPIPE disposition whose
 * connections are KILLed while it writes large queries.
 *
 * Every scenario counts submissions against completions: each request
 * completes exactly once, its errors are counted by kind, and a successful
 * request must carry its own value (a reply delivered to the wrong request
 * counts as wrong, which must stay 0). Each prints one TAP diagnostic:
 *   # fault <scenario>: requests N completions N ok N timeout N conn N ...
 */
#include "testutil.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

/* Each scenario stops by itself well within this; a hang is a failure. */
#define WATCHDOG_S 120

static int stopped_pid; /* a SIGSTOPped mariadbd, continued by teardown */
static pid_t parent_pid; /* the test's process, not a child it forked */

/* The watchdog: a hung scenario must not leave mariadbd stopped for the
 * suites that run after it. */
static void on_watchdog(int sig)
{
    static const char msg[] = "# watchdog: the scenario hung\n";
    ssize_t n;

    (void)sig;
    if (stopped_pid > 0)
        kill(stopped_pid, SIGCONT);
    n = write(STDOUT_FILENO, msg, sizeof(msg) - 1);
    (void)n;
    _exit(124);
}

static int setup(void **state)
{
    parent_pid = getpid();
    signal(SIGALRM, on_watchdog);
    alarm(WATCHDOG_S);
    return tu_setup(state);
}

static int teardown(void **state)
{
    (void)state;
    /* A failed assertion in a forked child lands here: the child must not go
     * on running the rest of the suite. */
    if (getpid() != parent_pid)
        _exit(5);
    if (stopped_pid > 0)
        kill(stopped_pid, SIGCONT);
    stopped_pid = 0;
    alarm(0);
    return 0;
}

static char url_buf[512];

static const char *tcp_url(const char *params)
{
    snprintf(url_buf, sizeof(url_buf), "mysql://%s:%s@127.0.0.1:%s/%s%s%s",
             tu_env("VL_TEST_MYSQL_USER"), tu_env("VL_TEST_MYSQL_PASSWORD"),
             tu_env("VL_TEST_MYSQL_PORT"), tu_env("VL_TEST_MYSQL_DB"), params ? "?" : "",
             params ? params : "");
    return url_buf;
}

/* ---- counting requests ---- */

typedef struct tally {
    int requests, completions, twice, ok, timeout, conn, proto, server, other, wrong;
} tally;

typedef struct req {
    tally *t;
    int64_t want;
    int calls;
} req;

static void req_done(vl_future *f, void *ud)
{
    req *r = ud;
    tally *t = r->t;
    int64_t got = -1;

    if (++r->calls > 1) {
        t->twice++;
        return;
    }
    t->completions++;
    switch (vl_future_status(f)) {
    case VL_OK:
        t->ok++;
        if (vl_mysql_result_int64(vl_future_mysql_result(f), 0, 0, &got) != VL_OK ||
            got != r->want)
            t->wrong++;
        break;
    case VL_ETIMEDOUT: t->timeout++; break;
    case VL_ECONN:
    case VL_ECLOSED: t->conn++; break;
    case VL_EPROTO: t->proto++; break;
    case VL_ESERVER: t->server++; break;
    default:
        fprintf(stderr, "unexpected status %d: %s\n", vl_future_status(f), vl_future_error(f));
        t->other++;
        break;
    }
}

/* Submits n requests "SELECT id, SLEEP(sleep_s)" numbered from first. */
static void submit(vl_mysql_pool *p, tally *t, req *rs, int first, int n, double sleep_s)
{
    int i;

    for (i = first; i < first + n; i++) {
        vl_mysql_param ps[2];
        vl_future *f;

        ps[0] = vl_mysql_p_int64(i);
        ps[1] = vl_mysql_p_double(sleep_s);
        rs[i].t = t;
        rs[i].want = i;
        rs[i].calls = 0;
        f = vl_mysql_pool_execute(p, "SELECT ?, SLEEP(?)", ps, 2);
        assert_non_null(f);
        assert_int_equal(vl_future_then(f, req_done, &rs[i]), VL_OK);
        t->requests++;
    }
}

/* Runs the loop until every request completed (the watchdog ends a hang). */
static void drain(vl_loop *loop, const tally *t)
{
    while (t->completions < t->requests)
        tu_sleep_ms(loop, 20);
}

static void report(const char *scenario, const tally *t)
{
    printf("# fault %s: requests %d completions %d ok %d timeout %d conn %d proto %d server %d "
           "wrong %d\n",
           scenario, t->requests, t->completions, t->ok, t->timeout, t->conn, t->proto, t->server,
           t->wrong);
    fflush(stdout);
    assert_int_equal(t->completions, t->requests);
    assert_int_equal(t->twice, 0);
    assert_int_equal(t->wrong, 0);
    assert_int_equal(t->other, 0);
}

/* ---- the admin connection ---- */

static vl_mysql *admin_new(vl_loop *loop)
{
    vl_mysql *a = vl_mysql_new(loop, tcp_url(NULL), NULL);
    vl_future *f = tu_wait_for(loop, vl_mysql_ready(a));

    if (vl_future_status(f) != VL_OK)
        fail_msg("admin connect: %s", vl_future_error(f));
    vl_future_free(f);
    return a;
}

/* KILLs every other connection of the test user; returns how many. */
static int kill_others(vl_loop *loop, vl_mysql *a)
{
    vl_mysql_param who = vl_mysql_p_str(tu_env("VL_TEST_MYSQL_USER"));
    vl_future *f = tu_wait_for(
        loop, vl_mysql_execute(a,
                               "SELECT id FROM information_schema.processlist"
                               " WHERE user = ? AND id <> CONNECTION_ID()",
                               &who, 1));
    const vl_mysql_result *r = vl_future_mysql_result(f);
    size_t i;
    int n = 0;

    if (vl_future_status(f) != VL_OK)
        fail_msg("processlist: %s", vl_future_error(f));
    for (i = 0; i < vl_mysql_result_rows(r); i++) {
        int64_t id;
        vl_mysql_param p;
        vl_future *k;

        assert_int_equal(vl_mysql_result_int64(r, i, 0, &id), VL_OK);
        p = vl_mysql_p_int64(id);
        k = tu_wait_for(loop, vl_mysql_execute(a, "KILL CONNECTION ?", &p, 1));
        /* A connection may have ended by itself meanwhile (1094). */
        if (vl_future_status(k) == VL_OK)
            n++;
        else if (vl_future_mysql_errno(k) != 1094)
            fail_msg("KILL: %s", vl_future_error(k));
        vl_future_free(k);
    }
    vl_future_free(f);
    return n;
}

static vl_mysql_pool *pool_new(vl_loop *loop, const char *params, size_t max_size,
                               uint64_t acquire_ms, const char *init_sql)
{
    vl_mysql_pool_options o;
    vl_mysql_pool *p;

    vl_mysql_pool_options_init(&o);
    o.max_size = max_size;
    o.acquire_timeout_ms = acquire_ms;
    o.connect_timeout_ms = 1000;
    o.init_sql = init_sql;
    p = vl_mysql_pool_new(loop, tcp_url(params), &o);
    assert_non_null(p);
    return p;
}

static void pool_finish(vl_loop *loop, vl_mysql_pool *p)
{
    vl_mysql_pool_free(p);
    tu_finish(loop);
}

/* Seconds a pool has to serve again once its server is back. */
#define RECOVER_S 30

/* Waits until the pool serves a request again. Its connect backoff (up to
 * 2 s) can outlast one acquire timeout, so a request that timed out waiting
 * is followed by another, until RECOVER_S have passed: a pool that never
 * recovers still fails, and nothing depends on when the backoff's probe
 * happens to fall. */
static void serving_again(vl_loop *loop, vl_mysql_pool *p)
{
    uint64_t deadline = vl_loop_now_ms(loop) + (uint64_t)RECOVER_S * 1000;

    for (;;) {
        vl_future *f = tu_wait_for(loop, vl_mysql_pool_query(p, "SELECT 1"));
        int st = vl_future_status(f);

        if (st == VL_OK) {
            vl_future_free(f);
            return;
        }
        /* A connection that was already dying may fail a request too. */
        if (st != VL_ETIMEDOUT && st != VL_ECONN && st != VL_ECLOSED)
            fail_msg("after the fault: %s", vl_future_error(f));
        if (vl_loop_now_ms(loop) >= deadline)
            fail_msg("the pool did not serve again within %d s: %s", RECOVER_S,
                     vl_future_error(f));
        vl_future_free(f);
    }
}

/* Requests after a fault: the pool has recovered when, once it serves
 * again, all of them succeed. */
static void recovered(vl_loop *loop, vl_mysql_pool *p, req *rs, int first, int n)
{
    tally t2;

    serving_again(loop, p);
    memset(&t2, 0, sizeof(t2));
    submit(p, &t2, rs, first, n, 0);
    drain(loop, &t2);
    assert_int_equal(t2.ok, n);
    assert_int_equal(t2.wrong, 0);
}

#define NREQ 400

/* Pooled connections KILLed mid-query, five times over. */
static void kill_mid_query(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql_pool *p = pool_new(loop, NULL, 8, 30000, NULL);
    vl_mysql *admin = admin_new(loop);
    static req rs[NREQ + 50];
    tally t;
    int rounds = 0, killed = 0;

    (void)state;
    memset(&t, 0, sizeof(t));
    submit(p, &t, rs, 0, NREQ, 0.02);
    while (t.completions < t.requests) {
        tu_sleep_ms(loop, 30);
        if (rounds < 5) {
            killed += kill_others(loop, admin);
            rounds++;
        }
    }
    report("kill_mid_query", &t);
    /* The kills hit statements: some failed as lost, none silently. */
    assert_true(killed > 0);
    assert_true(t.conn > 0);
    assert_int_equal(t.ok + t.conn, t.requests);
    recovered(loop, p, rs, NREQ, 50);
    vl_mysql_free(admin);
    pool_finish(loop, p);
}

/* The server's wait_timeout closes idle pooled connections: the pool notices
 * and every later request still succeeds on a fresh connection. */
static void wait_timeout_expiry(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql_pool *p = pool_new(loop, NULL, 4, 30000, "SET SESSION wait_timeout = 1");
    static req rs[200];
    vl_pool_stats st;
    tally t;

    (void)state;
    memset(&t, 0, sizeof(t));
    submit(p, &t, rs, 0, 8, 0.05); /* opens all four connections */
    drain(loop, &t);
    (vl_pool_stats_init(&st), vl_mysql_pool_stats_get(p, &st));
    assert_int_equal(st.open, 4);
    tu_sleep_ms(loop, 2500);
    submit(p, &t, rs, 8, 100, 0);
    drain(loop, &t);
    report("wait_timeout", &t);
    assert_int_equal(t.ok, t.requests);
    (vl_pool_stats_init(&st), vl_mysql_pool_stats_get(p, &st));
    assert_true((st.closed_dirty + st.closed_broken) >= 4);
    pool_finish(loop, p);
}

/* mariadbd stopped for longer than the read, connect and acquire timeouts,
 * then continued: everything in flight or waiting times out, nothing hangs,
 * and the pool serves again afterwards. */
static void sigstop_server(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql_pool *p = pool_new(loop, "read_timeout_ms=500", 4, 800, NULL);
    static req rs[150];
    tally t;

    (void)state;
    memset(&t, 0, sizeof(t));
    submit(p, &t, rs, 0, 8, 0); /* connections open before the stop */
    drain(loop, &t);
    stopped_pid = (int)tu_server_pid("mysql");
    assert_int_equal(kill(stopped_pid, SIGSTOP), 0);
    submit(p, &t, rs, 8, 60, 0.01);
    tu_sleep_ms(loop, 2000); /* longer than every timeout */
    /* Everything completed while the server was still stopped. */
    assert_int_equal(t.completions, t.requests);
    assert_int_equal(kill(stopped_pid, SIGCONT), 0);
    stopped_pid = 0;
    report("sigstop", &t);
    assert_int_equal(t.ok, 8);
    assert_int_equal(t.timeout, 60);
    recovered(loop, p, rs, 100, 30);
    pool_finish(loop, p);
}

/* mariadbd killed with -9 under load, then restarted. */
static void kill9_restart(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql_pool *p = pool_new(loop, NULL, 6, 1500, NULL);
    static req rs[150];
    tally t;

    (void)state;
    memset(&t, 0, sizeof(t));
    submit(p, &t, rs, 0, 60, 0.2);
    tu_sleep_ms(loop, 150);
    tu_kill_server("mysql");
    drain(loop, &t);
    report("kill9", &t);
    /* The first six ran when the server died; the rest waited for a
     * connection that never came back in time. */
    assert_true(t.conn >= 1);
    assert_int_equal(t.ok + t.conn + t.timeout, t.requests);
    assert_int_equal(tu_sh("%s restart-mysql %s >/dev/null", tu_env("VL_TEST_SERVERS"),
                           tu_env("VL_TEST_DIR")),
                     0);
    recovered(loop, p, rs, 100, 30);
    pool_finish(loop, p);
}

/* Connects refused together are one failure to the backoff. The pool opens
 * max_size connects to a loopback port that is bound but not listening; all
 * are refused at once. Counted as one failure, the backoff starts at its
 * minimum (100 ms) and probes follow well within the acquire timeout; were
 * each refusal to double it, it would start at its 2 s cap, no probe coming
 * before 1 s, and a server back after a blip would wait that long. */
static void refused_together_back_off_once(void **state)
{
    vl_loop *loop = vl_loop_new();
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    vl_mysql_pool_options o;
    vl_mysql_pool *p;
    vl_pool_stats st;
    char url[256];
    static req rs[8];
    tally t;

    (void)state;
    assert_true(fd >= 0);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    snprintf(url, sizeof(url), "mysql://%s:%s@127.0.0.1:%u/%s", tu_env("VL_TEST_MYSQL_USER"),
             tu_env("VL_TEST_MYSQL_PASSWORD"), (unsigned)ntohs(sa.sin_port),
             tu_env("VL_TEST_MYSQL_DB"));
    vl_mysql_pool_options_init(&o);
    o.max_size = 8;
    o.acquire_timeout_ms = 900;
    o.connect_timeout_ms = 1000;
    p = vl_mysql_pool_new(loop, url, &o);
    assert_non_null(p);
    memset(&t, 0, sizeof(t));
    submit(p, &t, rs, 0, 8, 0);
    drain(loop, &t);
    report("refused", &t);
    assert_int_equal(t.timeout, 8);
    (vl_pool_stats_init(&st), vl_mysql_pool_stats_get(p, &st));
    printf("# connect failures %llu\n", (unsigned long long)st.connect_failures);
    /* The eight refused together, then at least one probe. */
    assert_true(st.connect_failures > 8);
    assert_int_equal(st.connects, 0);
    close(fd);
    pool_finish(loop, p);
}

/* ---- SIGPIPE ---- */

#define BIG_QUERY_BYTES ((size_t)16 << 20)
#define SIGPIPE_CONNS 3
#define SIGPIPE_ROUNDS 6

static int big_done;
static int big_failed;

static void big_cb(vl_future *f, void *ud)
{
    (void)ud;
    big_done++;
    if (vl_future_status(f) != VL_OK)
        big_failed++;
}

/* The child: SIGPIPE at its default (terminate), connections KILLed by an
 * admin connection while they write 16 MiB queries. Exit 0 when every
 * query completed once and at least one was cut off by its KILL. */
static int sigpipe_child(void)
{
    vl_loop *loop = vl_loop_new();
    vl_mysql *admin = admin_new(loop);
    char *sql = malloc(BIG_QUERY_BYTES + 64);
    size_t n;
    int round, submitted = 0;
    sigset_t set;

    alarm(WATCHDOG_S); /* not inherited across fork */
    signal(SIGPIPE, SIG_DFL);
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    if (sql == NULL)
        return 2;
    n = (size_t)sprintf(sql, "SELECT LENGTH('");
    memset(sql + n, 'x', BIG_QUERY_BYTES);
    n += BIG_QUERY_BYTES;
    strcpy(sql + n, "')");
    for (round = 0; round < SIGPIPE_ROUNDS; round++) {
        vl_mysql *cs[SIGPIPE_CONNS];
        int i;

        for (i = 0; i < SIGPIPE_CONNS; i++) {
            vl_future *f;
            cs[i] = vl_mysql_new(loop, tcp_url(NULL), NULL);
            f = tu_wait_for(loop, vl_mysql_ready(cs[i]));
            if (vl_future_status(f) != VL_OK)
                return 3;
            vl_future_free(f);
        }
        /* Two big queries each: the KILL lands while the first or the
         * second is being written. */
        for (i = 0; i < SIGPIPE_CONNS; i++) {
            vl_future_then(vl_mysql_query(cs[i], sql), big_cb, NULL);
            vl_future_then(vl_mysql_query(cs[i], sql), big_cb, NULL);
            submitted += 2;
        }
        kill_others(loop, admin);
        while (big_done < submitted)
            tu_sleep_ms(loop, 10);
        for (i = 0; i < SIGPIPE_CONNS; i++)
            vl_mysql_free(cs[i]);
    }
    free(sql);
    vl_mysql_free(admin);
    vl_loop_run(loop);
    vl_loop_free(loop);
    printf("# sigpipe: queries %d completions %d failed %d\n", submitted, big_done, big_failed);
    fflush(stdout);
    return big_done == submitted && big_failed > 0 ? 0 : 4;
}

/* Connector/C writes with send(MSG_NOSIGNAL) (checked in its 3.3 source,
 * plugins/pvio/pvio_socket.c); volley itself only calls shutdown(). This
 * proves it: the process survives with SIGPIPE's default disposition. */
static void sigpipe_survives(void **state)
{
    pid_t pid;
    int status = 0;

    (void)state;
    tcp_url(NULL); /* skip or fail here, not in the child, without servers */
    fflush(stdout);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(sigpipe_child());
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (WIFSIGNALED(status))
        fail_msg("the process died of signal %d (SIGPIPE is %d)", WTERMSIG(status), SIGPIPE);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(sigpipe_survives, setup, teardown),
        cmocka_unit_test_setup_teardown(kill_mid_query, setup, teardown),
        cmocka_unit_test_setup_teardown(wait_timeout_expiry, setup, teardown),
        cmocka_unit_test_setup_teardown(sigstop_server, setup, teardown),
        cmocka_unit_test_setup_teardown(kill9_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(refused_together_back_off_once, setup, teardown),
    };

    return tu_run("mysql_fault", tests, sizeof(tests) / sizeof(tests[0]));
}
