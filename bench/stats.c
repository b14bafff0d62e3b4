/* SPDX-License-Identifier: BSD-3-Clause */
/* stats.c - latency histogram, clocks, memory and the progress bar. */
#include <stdlib.h>
#include <sys/resource.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

uint64_t bench_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

double bench_thread_cpu_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static double bench_cpu_us(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec * 1e6 + (double)ru.ru_utime.tv_usec +
           (double)ru.ru_stime.tv_sec * 1e6 + (double)ru.ru_stime.tv_usec;
}

uint64_t bench_intended_us(const bench_case *c, uint64_t t0_us, uint64_t i)
{
    return t0_us + (uint64_t)((double)i * 1e6 / c->rate);
}

uint64_t bench_pace(const bench_case *c, uint64_t t0_us, uint64_t i)
{
    uint64_t due = bench_intended_us(c, t0_us, i), now = bench_now_us();
    if (now < due) {
        uint64_t wait = due - now;
        struct timespec ts = {(time_t)(wait / 1000000), (long)(wait % 1000000) * 1000};
        while (nanosleep(&ts, &ts) != 0)
            ;
    }
    return due;
}

void bench_run_begin(bench_run *r)
{
    r->cpu0 = bench_cpu_us();
    r->t0 = bench_now_us();
}

void bench_run_end(bench_run *r)
{
    r->t1 = bench_now_us();
    r->cpu1 = bench_cpu_us();
}

void bench_hist_init(bench_hist *h)
{
    memset(h, 0, sizeof *h);
}

static int bench_log2(uint64_t v)
{
    return 63 - __builtin_clzll(v);
}

/* Values below 128 have a bucket each; above, a power of two 2^e is split
 * into 64 equal sub-buckets, so a bucket is at most 1/64 of its value wide. */
static size_t bench_hist_index(uint64_t us)
{
    if (us < 128)
        return (size_t)us;
    int e = bench_log2(us);
    size_t sub = (size_t)((us >> (e - 6)) & (BENCH_HIST_SUB - 1));
    size_t idx = 128 + (size_t)(e - 7) * BENCH_HIST_SUB + sub;
    return idx < BENCH_HIST_BUCKETS ? idx : BENCH_HIST_BUCKETS - 1;
}

/* The upper bound of a bucket, which is what its quantile reports. */
static uint64_t bench_hist_upper(size_t idx)
{
    if (idx < 128)
        return idx;
    size_t e = (idx - 128) / BENCH_HIST_SUB + 7;
    size_t sub = (idx - 128) % BENCH_HIST_SUB;
    uint64_t base = (uint64_t)1 << e;
    uint64_t width = base / BENCH_HIST_SUB;
    return base + (sub + 1) * width - 1;
}

void bench_hist_add(bench_hist *h, uint64_t us)
{
    h->b[bench_hist_index(us)]++;
    h->count++;
    h->sum += us;
    if (us > h->max)
        h->max = us;
}

void bench_hist_merge(bench_hist *into, const bench_hist *from)
{
    for (size_t i = 0; i < BENCH_HIST_BUCKETS; i++)
        into->b[i] += from->b[i];
    into->count += from->count;
    into->sum += from->sum;
    if (from->max > into->max)
        into->max = from->max;
}

uint64_t bench_hist_quantile(const bench_hist *h, double q)
{
    if (h->count == 0)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)h->count + 0.5);
    if (rank < 1)
        rank = 1;
    if (rank > h->count)
        rank = h->count;
    uint64_t seen = 0;
    for (size_t i = 0; i < BENCH_HIST_BUCKETS; i++) {
        seen += h->b[i];
        if (seen >= rank) {
            uint64_t up = bench_hist_upper(i);
            return up < h->max ? up : h->max;
        }
    }
    return h->max;
}

/* Reads one "Name:   N kB" line of /proc/self/status. */
static long bench_status_kb(const char *name)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    size_t n = strlen(name);
    long kb = -1;
    if (f == NULL)
        return -1;
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, name, n) == 0 && line[n] == ':') {
            kb = strtol(line + n + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kb;
}

long bench_rss_kb(void)
{
    return bench_status_kb("VmRSS");
}

long bench_peak_rss_kb(void)
{
    return bench_status_kb("VmHWM");
}

/* Writing 5 to clear_refs resets the peak RSS (Linux 4.0+), so each run
 * reports its own peak rather than the process's. */
void bench_peak_rss_reset(void)
{
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (f != NULL) {
        fputs("5", f);
        fclose(f);
    }
}

void bench_progress(const bench_case *c, uint64_t done)
{
    static int tty = -1;
    static uint64_t last;
    if (tty < 0)
        tty = isatty(STDERR_FILENO);
    if (!tty)
        return;
    uint64_t now = bench_now_us();
    if (done < c->requests && now - last < 100000)
        return;
    last = now;
    int width = 30;
    int fill = c->requests ? (int)((double)done / (double)c->requests * width) : width;
    char bar[64];
    for (int i = 0; i < width; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[width] = '\0';
    fprintf(stderr, "\r%-16s %-8s [%s] %3d%%\033[K", c->name,
            c->label[0] ? c->label : bench_mode_names[c->mode], bar,
            c->requests ? (int)(100.0 * (double)done / (double)c->requests) : 100);
    if (done >= c->requests)
        fprintf(stderr, "\r\033[K");
    fflush(stderr);
}
