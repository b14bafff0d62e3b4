/* SPDX-License-Identifier: BSD-3-Clause */
/* tests/common/testutil.c - see testutil.h. */
#include "testutil.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fnmatch.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>
#include <stdatomic.h>

#ifdef __linux__
#include <sys/prctl.h>
#endif

/* Atomic, so that allocations on worker threads (a vl_loop_group's loops,
 * the executor) are counted too: relaxed order is enough for counters read
 * once the threads are joined. */
static _Atomic long live;
static _Atomic long count;
static _Atomic long fail_at;
static _Atomic size_t largest;

static void note_size(size_t n)
{
    size_t seen = atomic_load_explicit(&largest, memory_order_relaxed);

    while (n > seen &&
           !atomic_compare_exchange_weak_explicit(&largest, &seen, n, memory_order_relaxed,
                                                  memory_order_relaxed))
        ;
}

/* 1 when this allocation is the one tu_alloc_fail_at asked to fail. */
static int counted_fails(void)
{
    long k = atomic_fetch_add_explicit(&count, 1, memory_order_relaxed) + 1;
    long at = atomic_load_explicit(&fail_at, memory_order_relaxed);

    return at > 0 && k == at;
}

static void *count_malloc(size_t n, void *ud)
{
    void *p;

    (void)ud;
    note_size(n);
    if (counted_fails())
        return NULL;
    p = malloc(n);
    if (p != NULL)
        atomic_fetch_add_explicit(&live, 1, memory_order_relaxed);
    return p;
}

static void *count_realloc(void *p, size_t n, void *ud)
{
    void *q;

    (void)ud;
    note_size(n);
    if (counted_fails())
        return NULL;
    q = realloc(p, n);
    if (q != NULL && p == NULL)
        atomic_fetch_add_explicit(&live, 1, memory_order_relaxed);
    return q;
}

static void count_free(void *p, void *ud)
{
    (void)ud;
    if (p != NULL)
        atomic_fetch_sub_explicit(&live, 1, memory_order_relaxed);
    free(p);
}

void tu_alloc_install(void)
{
    static const vl_allocator a = {count_malloc, count_realloc, count_free, NULL};

    vl_allocator_set(&a);
    count = 0;
    fail_at = 0;
    largest = 0;
}

size_t tu_alloc_largest(void)
{
    return largest;
}

void tu_rss_peak_reset(void)
{
    FILE *f = fopen("/proc/self/clear_refs", "w");

    if (f != NULL) {
        fputs("5", f); /* resets VmHWM to the current RSS */
        fclose(f);
    }
}

/* A "Key:   N kB" line of /proc/self/status, in KiB; -1 when absent. */
static long status_kb(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    size_t n = strlen(key);
    char line[256];
    long kb = -1;

    if (f == NULL)
        return -1;
    while (fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, key, n) == 0)
            kb = strtol(line + n, NULL, 10);
    fclose(f);
    return kb;
}

long tu_rss_peak_kb(void)
{
    return status_kb("VmHWM:");
}

long tu_rss_kb(void)
{
    return status_kb("VmRSS:");
}

long tu_alloc_live(void)
{
    return live;
}

void tu_alloc_fail_at(long n)
{
    count = 0;
    fail_at = n;
}

long tu_alloc_count(void)
{
    return count;
}

void tu_loop_finish(vl_loop *loop)
{
    assert_int_equal(vl_loop_alive(loop), 0);
    vl_loop_free(loop);
    assert_int_equal(tu_alloc_live(), 0);
}

const char *tu_env(const char *name)
{
    const char *v = getenv(name);

    if (v == NULL || v[0] == '\0') {
        const char *ci = getenv("CI");
        if (ci != NULL && strcmp(ci, "true") == 0)
            fail_msg("%s is not set: the harness did not start its servers", name);
        skip();
    }
    return v;
}

const char *tu_env_item(const char *name, int i)
{
    static char buf[4][512];
    static int slot;
    const char *v = tu_env(name);
    char *out = buf[slot++ % 4];
    int k = 0;

    while (k < i && (v = strchr(v, ',')) != NULL) {
        v++;
        k++;
    }
    if (v == NULL)
        fail_msg("%s has no item %d", name, i);
    snprintf(out, 512, "%.*s", (int)strcspn(v, ","), v);
    return out;
}

int tu_sh(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    int rc;

    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    rc = system(cmd);
    return rc == -1 ? -1 : (rc >> 8) & 0xff;
}

void tu_count_cb(vl_future *f, void *ud)
{
    (void)f;
    (*(int *)ud)++;
}

int tu_setup(void **state)
{
    (void)state;
    tu_alloc_install();
    return 0;
}

vl_future *tu_wait_for(vl_loop *loop, vl_future *f)
{
    assert_non_null(f);
    vl_loop_run_until(loop, f);
    assert_true(vl_future_done(f));
    return f;
}

int tu_await(vl_loop *loop, vl_future *f)
{
    assert_non_null(f);
    return vl_loop_run_until(loop, f);
}

vl_future *tu_run_cmd(vl_loop *loop, vl_future *f, int want)
{
    int rc = tu_await(loop, f);

    if (rc != want) {
        fprintf(stderr, "status %d (%s), wanted %d\n", rc, vl_future_error(f), want);
        fail();
    }
    return f;
}

uint64_t tu_ms(uint64_t ms)
{
    const char *s = getenv("VL_TEST_TIME_SCALE");
    long k = s != NULL ? strtol(s, NULL, 10) : 1;

    return ms * (uint64_t)(k > 1 ? k : 1);
}

void tu_sleep_ms(vl_loop *loop, uint64_t ms)
{
    vl_future *s = vl_loop_sleep(loop, ms);

    assert_int_equal(tu_await(loop, s), VL_OK);
    vl_future_free(s);
}

void tu_finish(vl_loop *loop)
{
    vl_loop_run(loop);
    tu_loop_finish(loop);
}

const char *tu_redis_url(int i)
{
    static char buf[4][128];
    static int slot;
    char *out = buf[slot++ % 4];

    snprintf(out, 128, "redis://127.0.0.1:%s", tu_env_item("VL_TEST_REDIS_PORTS", i));
    return out;
}

void tu_check_str(const vl_redis_reply *r, const char *want)
{
    size_t len;
    const char *s = vl_redis_reply_str(r, &len);

    assert_non_null(s);
    assert_int_equal(len, strlen(want));
    assert_memory_equal(s, want, len);
}

long tu_server_pid(const char *name)
{
    char path[512];
    FILE *fp;
    long pid = -1;

    snprintf(path, sizeof(path), "%s/%s.pid", tu_env("VL_TEST_DIR"), name);
    fp = fopen(path, "r");
    assert_non_null(fp);
    assert_int_equal(fscanf(fp, "%ld", &pid), 1);
    fclose(fp);
    assert_true(pid > 1);
    return pid;
}

void tu_kill_server(const char *name)
{
    long pid = tu_server_pid(name);
    char path[64];
    int i;

    assert_int_equal(kill((pid_t)pid, SIGKILL), 0);
    snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
    for (i = 0; i < 500; i++) {
        FILE *fp = fopen(path, "r");
        char buf[512];
        char *st;
        if (fp == NULL)
            return;
        st = fgets(buf, sizeof(buf), fp);
        fclose(fp);
        /* Nobody may reap it here: a zombie counts as gone. */
        st = st != NULL ? strrchr(buf, ')') : NULL;
        if (st == NULL || st[2] == 'Z' || st[2] == 'X')
            return;
        usleep(10000);
    }
    fail_msg("%s did not die", name);
}

/* The per-test runner (libuv's test/runner.c is the model). Each test runs
 * in a child process of its own, so that a failed assertion, a crash or a
 * hang stays in that test: the allocation counter, the loop and everything
 * else start fresh for the next one. The parent owns the TAP stream on
 * stdout: one plan for the selected tests, then one result line per test,
 * with the child's own output passed through as "# " diagnostics. */

/* Seconds a test may run before its process group is killed. */
#define TU_CASE_TIMEOUT_S 120

/* The running child's process group, for the parent's signal handler. */
static volatile sig_atomic_t tu_child_pgid;

/* The parent passes an interruption on to the running test's process group
 * (which is not in the terminal's foreground group), then dies of the same
 * signal. Only async-signal-safe calls. */
static void tu_on_signal(int sig)
{
    pid_t pg = (pid_t)tu_child_pgid;

    if (pg > 0)
        kill(-pg, SIGKILL);
    signal(sig, SIG_DFL);
    raise(sig);
}

static uint64_t tu_mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* What the child reported on its result line. */
enum tu_verdict { TU_NONE, TU_PASS, TU_FAIL, TU_SKIP };

/* Reassembles the child's stdout into lines. */
typedef struct tu_lines {
    char buf[4096];
    size_t len;
    int plan_seen;
    const char *name; /* the test's, to recognise cmocka's result line */
    enum tu_verdict verdict;
} tu_lines;

/* Whether `line` is `prefix` followed by exactly `name`. */
static int tu_is(const char *line, const char *prefix, const char *name)
{
    size_t n = strlen(prefix);

    return strncmp(line, prefix, n) == 0 && strcmp(line + n, name) == 0;
}

/* One line of the child's cmocka TAP: its result line is kept for the
 * parent's own, its plan (the first line) and group summary are dropped, and
 * everything else is printed as a diagnostic, so nothing a test prints can
 * be counted. */
static void tu_line(tu_lines *l, const char *line)
{
    int first = !l->plan_seen;

    l->plan_seen = 1;
    if (first && strcmp(line, "1..1") == 0) {
        return;
    } else if (l->verdict == TU_NONE && tu_is(line, "ok 1 - ", l->name)) {
        l->verdict = TU_PASS;
    } else if (l->verdict == TU_NONE && tu_is(line, "not ok 1 - ", l->name)) {
        l->verdict = TU_FAIL;
    } else if (l->verdict == TU_NONE && tu_is(line, "not ok 1 # SKIP ", l->name)) {
        l->verdict = TU_SKIP;
    } else if (l->verdict != TU_NONE && (strncmp(line, "# ok - ", 7) == 0 ||
                                         strncmp(line, "# not ok - ", 11) == 0)) {
        return;
    } else {
        printf("%s%s\n", line[0] == '#' ? "" : "# ", line);
        fflush(stdout);
    }
}

static void tu_feed(tu_lines *l, const char *data, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        if (data[i] == '\n' || l->len == sizeof(l->buf) - 1) {
            l->buf[l->len] = '\0';
            tu_line(l, l->buf);
            l->len = 0;
            if (data[i] == '\n')
                continue;
        }
        l->buf[l->len++] = data[i];
    }
}

/* Reads what the child wrote; returns 0 at end of file. */
static int tu_drain(int fd, tu_lines *l)
{
    char chunk[4096];
    ssize_t n = read(fd, chunk, sizeof(chunk));

    if (n < 0)
        return errno == EINTR || errno == EAGAIN ? 1 : 0;
    if (n > 0)
        tu_feed(l, chunk, (size_t)n);
    return n > 0;
}

/* The child: its own process group (so a timeout can kill whatever it
 * started), unbuffered stdout into the pipe (so a crash loses nothing that
 * was printed), and cmocka running this one test. */
static void tu_child(const char *name, const struct CMUnitTest *test, int fd, pid_t parent)
{
    int rc;

    setpgid(0, 0);
#ifdef __linux__
    /* A parent killed outright must not leave a test running forever. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(1);
#else
    (void)parent;
#endif
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    if (dup2(fd, STDOUT_FILENO) < 0)
        _exit(1);
    close(fd);
    setvbuf(stdout, NULL, _IONBF, 0);
    cmocka_set_message_output(CM_OUTPUT_TAP);
    rc = _cmocka_run_group_tests(name, test, 1, NULL, NULL);
    /* exit, not _exit: LeakSanitizer and valgrind report at exit, and their
     * exit status then fails the test. */
    exit(rc == 0 ? 0 : 1);
}

/* Describes why a test failed although (or before) it reported a result. */
static void tu_reason(char *out, size_t cap, int timed_out, unsigned timeout_s, int status)
{
    if (timed_out)
        snprintf(out, cap, "timed out after %u s (VL_TEST_CASE_TIMEOUT); its process group "
                 "was killed", timeout_s);
    else if (WIFSIGNALED(status))
        snprintf(out, cap, "killed by SIG%s (%s)", sigabbrev_np(WTERMSIG(status)) != NULL
                 ? sigabbrev_np(WTERMSIG(status)) : "?", strsignal(WTERMSIG(status)));
    else if (WIFEXITED(status))
        snprintf(out, cap, "exit status %d", WEXITSTATUS(status));
    else
        snprintf(out, cap, "wait status 0x%x", (unsigned)status);
}

/* Runs `test` in a child process and prints its TAP result as number
 * `num`; returns 1 when it failed. */
static int tu_run_one(const char *name, const struct CMUnitTest *test, size_t num,
                      unsigned timeout_s)
{
    tu_lines lines;
    char why[160];
    uint64_t deadline;
    int fds[2], status = 0, timed_out = 0, open_fd = 1, failed;
    pid_t pid, parent = getpid();

    memset(&lines, 0, sizeof(lines));
    lines.name = test->name;
    if (pipe(fds) != 0) {
        printf("not ok %zu - %s\n# pipe: %s\n", num, test->name, strerror(errno));
        return 1;
    }
    fflush(stdout);
    fflush(stderr);
    pid = fork();
    if (pid < 0) {
        printf("not ok %zu - %s\n# fork: %s\n", num, test->name, strerror(errno));
        close(fds[0]);
        close(fds[1]);
        return 1;
    }
    if (pid == 0) {
        close(fds[0]);
        tu_child(name, test, fds[1], parent);
    }
    /* Both sides set the group, so that it exists before either relies on
     * it; the parent's call fails harmlessly once the child has done it. */
    setpgid(pid, pid);
    tu_child_pgid = pid;
    close(fds[1]);
    deadline = tu_mono_ms() + (uint64_t)timeout_s * 1000;
    for (;;) {
        siginfo_t si;
        uint64_t now = tu_mono_ms();

        if (open_fd) {
            struct pollfd p = {fds[0], POLLIN, 0};
            if (poll(&p, 1, 50) > 0)
                open_fd = tu_drain(fds[0], &lines);
        } else {
            usleep(10000);
        }
        /* WNOWAIT leaves the child a zombie, so its pid (our process group
         * id) cannot be reused before the group is killed below. */
        memset(&si, 0, sizeof(si));
        if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == pid)
            break;
        if (now >= deadline) {
            timed_out = 1;
            kill(-pid, SIGKILL);
            break;
        }
    }
    /* Whatever the child wrote before it ended is still in the pipe; a
     * process it left behind may hold the pipe open, so read only what is
     * there, then kill the rest of its group. */
    while (open_fd) {
        struct pollfd p = {fds[0], POLLIN, 0};
        if (poll(&p, 1, 0) <= 0)
            break;
        open_fd = tu_drain(fds[0], &lines);
    }
    if (lines.len > 0)
        tu_feed(&lines, "\n", 1);
    kill(-pid, SIGKILL);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    tu_child_pgid = 0;
    close(fds[0]);

    /* A test passes only if it said so and its process then exited cleanly:
     * a sanitizer's or valgrind's report at exit fails it too. */
    failed = timed_out || !WIFEXITED(status) || WEXITSTATUS(status) != 0 ||
             lines.verdict == TU_FAIL || lines.verdict == TU_NONE;
    if (!failed && lines.verdict == TU_SKIP) {
        printf("ok %zu - %s # SKIP\n", num, test->name);
    } else if (!failed) {
        printf("ok %zu - %s\n", num, test->name);
    } else {
        printf("not ok %zu - %s\n", num, test->name);
        /* cmocka explains its own failures, which exit with status 1. */
        if (lines.verdict != TU_FAIL || timed_out || !WIFEXITED(status) ||
            WEXITSTATUS(status) != 1) {
            tu_reason(why, sizeof(why), timed_out, timeout_s, status);
            printf("# %s%s\n", why,
                   lines.verdict == TU_PASS   ? ", after the test itself had passed"
                   : lines.verdict == TU_NONE ? ", before the test reported a result"
                                              : "");
        }
    }
    fflush(stdout);
    return failed;
}

int tu_run(const char *name, const struct CMUnitTest *tests, size_t n)
{
    const char *filter = getenv("VL_TEST_FILTER");
    const char *tmo = getenv("VL_TEST_CASE_TIMEOUT");
    unsigned timeout_s = TU_CASE_TIMEOUT_S;
    size_t i, selected = 0, num = 0;
    int failed = 0;

    if (filter != NULL && filter[0] == '\0')
        filter = NULL;
    if (tmo != NULL && tmo[0] != '\0') {
        char *end;
        unsigned long v = strtoul(tmo, &end, 10);
        if (*end != '\0' || v == 0 || v > 86400) {
            fprintf(stderr, "VL_TEST_CASE_TIMEOUT=%s is not a number of seconds\n", tmo);
            return 1;
        }
        timeout_s = (unsigned)v;
    }
    signal(SIGINT, tu_on_signal);
    signal(SIGTERM, tu_on_signal);
    signal(SIGHUP, tu_on_signal);
    /* cmocka's filter syntax: shell wildcards on the test's name. */
    for (i = 0; i < n; i++)
        selected += filter == NULL || fnmatch(filter, tests[i].name, 0) == 0;
    printf("1..%zu\n", selected);
    for (i = 0; i < n; i++) {
        if (filter != NULL && fnmatch(filter, tests[i].name, 0) != 0)
            continue;
        failed += tu_run_one(name, &tests[i], ++num, timeout_s);
    }
    printf("# %s - %s: %zu test(s), %d failed\n", failed ? "not ok" : "ok", name, selected,
           failed);
    fflush(stdout);
    return failed;
}

void tu_restart_server(const char *name)
{
    const char *servers = tu_env("VL_TEST_SERVERS");
    const char *dir = tu_env("VL_TEST_DIR");
    int rc = -1;

    /* The names are the harness's own, never user input; the check keeps
     * anything that is not one of them out of the shell command. */
    if (name[strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789-")] != '\0')
        fail_msg("not a harness server name: %s", name);
    if (strncmp(name, "redis-", 6) == 0)
        rc = tu_sh("'%s' restart-redis '%s' '%s' >/dev/null", servers, dir, name + 6);
    else if (strncmp(name, "cluster-", 8) == 0 || strncmp(name, "sentinel-", 9) == 0)
        rc = tu_sh("'%s' restart-redis '%s' '%s' >/dev/null", servers, dir, name);
    else if (strcmp(name, "mysql") == 0 || strncmp(name, "mysql-", 6) == 0)
        rc = tu_sh("'%s' restart-mysql '%s' '%s' >/dev/null", servers, dir, name);
    else
        fail_msg("not a harness server name: %s", name);
    if (rc != 0)
        fail_msg("restarting %s failed (status %d)", name, rc);
}

int tu_env_ports(const char *var, int *ports, int max)
{
    const char *v = tu_env(var);
    int n = 0;

    while (*v != '\0') {
        char *end;
        long p;

        v += strspn(v, ", ");
        if (*v == '\0')
            break;
        p = strtol(v, &end, 10);
        if (end == v || p <= 0 || p > 65535 || (*end != '\0' && *end != ' ' && *end != ','))
            fail_msg("%s is not a list of ports: %s", var, tu_env(var));
        if (n == max)
            fail_msg("%s has more than %d ports", var, max);
        ports[n++] = (int)p;
        v = end;
    }
    if (n == 0)
        fail_msg("%s lists no port", var);
    return n;
}

/* Runs "servers.sh wait-cluster" or "wait-sentinel"; the script bounds the
 * wait (30 s times VL_TEST_TIME_SCALE, which it reads from the environment
 * too) and says on stderr what is still wrong when it gives up. */
static void tu_wait_healthy(const char *what)
{
    int rc = tu_sh("'%s' wait-%s '%s' >/dev/null", tu_env("VL_TEST_SERVERS"), what,
                   tu_env("VL_TEST_DIR"));

    if (rc != 0)
        fail_msg("the %s did not become healthy (servers.sh wait-%s: status %d)", what, what,
                 rc);
}

void tu_cluster_wait_ok(void)
{
    tu_wait_healthy("cluster");
}

void tu_sentinel_wait_ok(void)
{
    tu_wait_healthy("sentinel");
}

int tu_silent_listener(int *port)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    assert_true(fd >= 0);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(fd, 64), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    *port = ntohs(sa.sin_port);
    return fd;
}

static int threads_now(void)
{
    DIR *d = opendir("/proc/self/task");
    struct dirent *e;
    int n = 0;

    assert_non_null(d);
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

void tu_workers_gone(void)
{
    int i;

    for (i = 0; i < 500 && threads_now() > 1; i++)
        usleep(10 * 1000);
    assert_int_equal(threads_now(), 1);
}
