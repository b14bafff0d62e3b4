/* tests/common/testutil.c - see testutil.h. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

static long live;
static long count;
static long fail_at;

static void *count_malloc(size_t n, void *ud)
{
    void *p;

    (void)ud;
    count++;
    if (fail_at > 0 && count == fail_at)
        return NULL;
    p = malloc(n);
    if (p != NULL)
        live++;
    return p;
}

static void *count_realloc(void *p, size_t n, void *ud)
{
    void *q;

    (void)ud;
    count++;
    if (fail_at > 0 && count == fail_at)
        return NULL;
    q = realloc(p, n);
    if (q != NULL && p == NULL)
        live++;
    return q;
}

static void count_free(void *p, void *ud)
{
    (void)ud;
    if (p != NULL)
        live--;
    free(p);
}

void tu_alloc_install(void)
{
    static const vl_allocator a = {count_malloc, count_realloc, count_free, NULL};

    vl_allocator_set(&a);
    count = 0;
    fail_at = 0;
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

int tu_run(const char *name, const struct CMUnitTest *tests, size_t n)
{
    const char *filter = getenv("VL_TEST_FILTER");

    if (filter != NULL && filter[0] != '\0')
        cmocka_set_test_filter(filter);
    return _cmocka_run_group_tests(name, tests, n, NULL, NULL);
}
