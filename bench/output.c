/* SPDX-License-Identifier: BSD-3-Clause */
/* output.c - the terminal table, CSV and JSON. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>
#include <hiredis.h>
#include <mariadb_version.h>
#include <mysql.h>
#include <volley.h>

#include "bench.h"

const char *const bench_mode_names[BENCH_NMODES] = {"sync", "threads", "async", "raw", "ref"};

const char *bench_kind_name(int kind)
{
    switch (kind) {
    case BENCH_KIND_CPU: return "cpu";
    case BENCH_KIND_LATENCY: return "latency";
    case BENCH_KIND_SCALE: return "scale";
    default: return "memory";
    }
}

static const char *bench_backend_name(int b)
{
    return b == BENCH_REDIS ? "redis" : "mysql";
}

const char *bench_label(const bench_result *r)
{
    return r->c.label[0] ? r->c.label : bench_mode_names[r->c.mode];
}

void bench_table_header(FILE *f, const char *title)
{
    fprintf(f, "\n== %s ==\n", title);
    fprintf(f, "%-33s %5s %5s %6s %8s %10s %4s %-17s %7s %7s %7s %7s %7s %7s %7s  %s\n",
            "mode", "hosts", "conns", "window", "requests", "ops/s", "runs", "ops/s min-max",
            "p50_us", "p90_us", "p99_us", "p999_us", "max_us", "cpu_us", "rss_MiB",
            "speedup over (mode@in flight)");
}

/* "min-max" of the row's runs, or "-" when it ran once. */
static void bench_range(const bench_result *r, char *buf, size_t cap)
{
    if (r->runs > 1)
        snprintf(buf, cap, "%.0f-%.0f", r->ops_min, r->ops_max);
    else
        snprintf(buf, cap, "-");
}

void bench_table_row(FILE *f, const bench_result *r)
{
    char range[48];
    bench_range(r, range, sizeof range);
    fprintf(f, "%-33s %5d %5d %6d %8" PRIu64 " %10.0f %4d %-17s", bench_label(r),
            r->c.mode == BENCH_REF ? 1 : r->c.hosts, r->c.conns, r->c.window, r->c.requests,
            r->ops_per_sec, r->runs > 0 ? r->runs : 1, range);
    if (r->c.mode == BENCH_REF)
        fprintf(f, " %7s %7s %7s %7s %7s %7s %7s", "-", "-", "-", "-", "-", "-", "-");
    else
        fprintf(f,
                " %7" PRIu64 " %7" PRIu64 " %7" PRIu64 " %7" PRIu64 " %7" PRIu64 " %7.2f %7.1f",
                r->p50, r->p90, r->p99, r->p999, r->max, r->cpu_us_per_op,
                (double)r->peak_rss_kb / 1024.0);
    if (r->speedup > 0)
        fprintf(f, "  %.2fx %s", r->speedup, r->vs);
    else
        fprintf(f, "  %s", "-");
    if (r->errors)
        fprintf(f, "  ERRORS: %" PRIu64, r->errors);
    if (r->note[0])
        fprintf(f, "  (%s)", r->note);
    fputc('\n', f);
}

static const char *bench_target_status(const bench_target *t)
{
    switch (t->status) {
    case BENCH_TARGET_MET: return "met";
    case BENCH_TARGET_NOT_MET: return "NOT met";
    case BENCH_TARGET_SKIPPED: return "skipped";
    default: return "not measured";
    }
}

/* A size or a duration must stay within its bound; a ratio must reach it. */
static const char *bench_target_op(const bench_target *t)
{
    return t->bytes || t->ms ? "<=" : ">=";
}

static const char *bench_target_unit(const bench_target *t)
{
    return t->bytes ? "bytes" : t->ms ? "ms" : "ratio";
}

void bench_target_line(FILE *f, const bench_target *t)
{
    fprintf(f, "target: %s", t->what);
    if (t->status == BENCH_TARGET_MET || t->status == BENCH_TARGET_NOT_MET) {
        if (t->bytes)
            fprintf(f, " %.0f B (<= %.0f)", t->value, t->bound);
        else if (t->ms)
            fprintf(f, " %.3f ms (<= %g ms)", t->value, t->bound);
        else /* 1.0, 0.8, but 0.95 */
            fprintf(f, " = %.2fx (>= %.*f)", t->value,
                    (long)(t->bound * 100 + 0.5) % 10 == 0 ? 1 : 2, t->bound);
    } else {
        fprintf(f, " (%s %g%s)", bench_target_op(t), t->bound,
                t->bytes ? " B" : t->ms ? " ms" : "x");
    }
    fprintf(f, ": %s", bench_target_status(t));
    if (t->note[0])
        fprintf(f, "  [%s]", t->note);
    fputc('\n', f);
}

/* A CSV field in quotes; a quote inside is doubled. */
static void bench_csv_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"')
            fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

/* CSV: one row per run, then one per target (kind "target", group -1,
 * the run columns empty and the last four filled). `group` numbers the
 * scenarios for the chart. */
int bench_write_csv(const char *path, const bench_result *rs, size_t n, const bench_target *ts,
                    size_t nt)
{
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        perror(path);
        return -1;
    }
    fprintf(f, "group,name,kind,backend,mode,hosts,connections,window,requests,ops_per_sec,"
               "p50_us,p90_us,p99_us,p999_us,max_us,cpu_us_per_op,peak_rss_kb,speedup,errors,"
               "target_value,target_op,target_bound,target_status,speedup_over,runs,"
               "ops_min,ops_max\n");
    for (size_t k = 0; k < n; k++) {
        const bench_result *r = &rs[k];
        /* The labels contain no comma or quote; quoting keeps the spaces. */
        fprintf(f,
                "%d,\"%s\",%s,%s,\"%s\",%d,%d,%d,%" PRIu64 ",%.1f,%" PRIu64 ",%" PRIu64
                ",%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%.3f,%ld,%.3f,%" PRIu64 ",,,,,\"%s\",%d,%.1f,"
                "%.1f\n",
                r->c.group, r->c.name, bench_kind_name(r->c.kind),
                bench_backend_name(r->c.backend), bench_label(r), r->c.hosts, r->c.conns,
                r->c.window, r->c.requests, r->ops_per_sec, r->p50, r->p90, r->p99, r->p999,
                r->max, r->cpu_us_per_op, r->peak_rss_kb, r->speedup, r->errors, r->vs,
                r->runs > 0 ? r->runs : 1, r->ops_min, r->ops_max);
    }
    for (size_t k = 0; k < nt; k++) {
        const bench_target *t = &ts[k];
        fputs("-1,", f);
        bench_csv_str(f, t->name);
        fputs(",target,redis,", f);
        bench_csv_str(f, t->what);
        /* Columns 6 to 19 (the run's) stay empty. */
        fputs(",,,,,,,,,,,,,,,", f);
        if (t->status == BENCH_TARGET_MET || t->status == BENCH_TARGET_NOT_MET)
            fprintf(f, "%.3f", t->value);
        fprintf(f, ",%s,%g,", bench_target_op(t), t->bound);
        bench_csv_str(f, bench_target_status(t));
        fputs(",,,,\n", f);
    }
    if (fclose(f) != 0) {
        perror(path);
        return -1;
    }
    return 0;
}

static void bench_cpu_model(char *buf, size_t cap)
{
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[512];
    snprintf(buf, cap, "unknown");
    if (f == NULL)
        return;
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, "model name", 10) == 0) {
            char *v = strchr(line, ':');
            if (v) {
                v++;
                while (*v == ' ' || *v == '\t')
                    v++;
                v[strcspn(v, "\n")] = '\0';
                snprintf(buf, cap, "%s", v);
            }
            break;
        }
    }
    fclose(f);
}

static void bench_redis_version(const bench_env *e, char *buf, size_t cap)
{
    snprintf(buf, cap, "unknown");
    if (e->nredis == 0)
        return;
    redisContext *c = redisConnect(e->redis_host, e->redis_ports[0]);
    if (c && !c->err) {
        redisReply *r = redisCommand(c, "INFO server");
        const char *v = r && r->type == REDIS_REPLY_STRING ? strstr(r->str, "redis_version:") : NULL;
        if (v) {
            v += strlen("redis_version:");
            snprintf(buf, cap, "%.*s", (int)strcspn(v, "\r\n"), v);
        }
        if (r)
            freeReplyObject(r);
    }
    if (c)
        redisFree(c);
}

static void bench_mysql_version(const bench_env *e, char *buf, size_t cap)
{
    snprintf(buf, cap, "unknown");
    if (e->mysql_port == 0 && e->mysql_sock == NULL)
        return;
    MYSQL *m = bench_mysql_connect(e, 0);
    if (m) {
        snprintf(buf, cap, "%s", mysql_get_server_info(m));
        mysql_close(m);
    }
}

/* ---- JSON, written by hand with full string escaping (no dependency
 * beyond what the Makefile links already). ---- */

static void bench_json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        case '\t': fputs("\\t", f); break;
        default:
            if (*p < 0x20 || *p == 0x7f)
                fprintf(f, "\\u%04x", *p);
            else
                fputc(*p, f);
        }
    }
    fputc('"', f);
}

/* "key": "value" with the separator that goes before it. */
static void bench_json_kv(FILE *f, int *first, const char *key, const char *value)
{
    fputs(*first ? "" : ", ", f);
    *first = 0;
    bench_json_str(f, key);
    fputs(": ", f);
    bench_json_str(f, value);
}

static void bench_json_ku(FILE *f, int *first, const char *key, uint64_t v)
{
    fputs(*first ? "" : ", ", f);
    *first = 0;
    bench_json_str(f, key);
    fprintf(f, ": %" PRIu64, v);
}

static void bench_json_kd(FILE *f, int *first, const char *key, double v)
{
    fputs(*first ? "" : ", ", f);
    *first = 0;
    bench_json_str(f, key);
    /* JSON has no NaN or infinity. */
    if (v != v || v > 1e300 || v < -1e300)
        fputs(": null", f);
    else
        fprintf(f, ": %.3f", v);
}

static void bench_json_knull(FILE *f, int *first, const char *key)
{
    fputs(*first ? "" : ", ", f);
    *first = 0;
    bench_json_str(f, key);
    fputs(": null", f);
}

int bench_write_json(const char *path, const bench_result *rs, size_t n, const bench_target *ts,
                     size_t nt, const bench_env *e)
{
    FILE *f = fopen(path, "w");
    char buf[256];
    struct utsname un;
    time_t now = time(NULL);
    struct tm tm;
    int first;
    if (f == NULL) {
        perror(path);
        return -1;
    }
    fputs("{\n  \"scenarios\": [\n", f);
    for (size_t k = 0; k < n; k++) {
        const bench_result *r = &rs[k];
        first = 1;
        fputs("    {", f);
        bench_json_kv(f, &first, "name", r->c.name);
        bench_json_kv(f, &first, "kind", bench_kind_name(r->c.kind));
        bench_json_kv(f, &first, "backend", bench_backend_name(r->c.backend));
        bench_json_kv(f, &first, "mode", bench_label(r));
        bench_json_ku(f, &first, "hosts", (uint64_t)r->c.hosts);
        bench_json_ku(f, &first, "connections", (uint64_t)r->c.conns);
        bench_json_ku(f, &first, "window", (uint64_t)r->c.window);
        bench_json_ku(f, &first, "requests", r->c.requests);
        bench_json_kd(f, &first, "ops_per_sec", r->ops_per_sec);
        bench_json_kd(f, &first, "seconds", r->seconds);
        if (r->c.mode == BENCH_REF) {
            /* The reference tools report throughput only. */
            bench_json_knull(f, &first, "p50_us");
            bench_json_knull(f, &first, "p99_us");
            bench_json_knull(f, &first, "max_us");
            bench_json_knull(f, &first, "cpu_us_per_op");
            bench_json_knull(f, &first, "peak_rss_kb");
        } else {
            bench_json_ku(f, &first, "p50_us", r->p50);
            bench_json_ku(f, &first, "p90_us", r->p90);
            bench_json_ku(f, &first, "p99_us", r->p99);
            bench_json_ku(f, &first, "p999_us", r->p999);
            bench_json_ku(f, &first, "max_us", r->max);
            bench_json_kd(f, &first, "cpu_us_per_op", r->cpu_us_per_op);
            bench_json_ku(f, &first, "peak_rss_kb", (uint64_t)(r->peak_rss_kb > 0 ? r->peak_rss_kb : 0));
        }
        if (r->speedup > 0) {
            bench_json_kd(f, &first, "speedup", r->speedup);
            bench_json_kv(f, &first, "speedup_over", r->vs);
        }
        bench_json_ku(f, &first, "runs", (uint64_t)(r->runs > 0 ? r->runs : 1));
        if (r->runs > 1) {
            bench_json_kd(f, &first, "ops_min", r->ops_min);
            bench_json_kd(f, &first, "ops_max", r->ops_max);
        }
        if (r->c.tls)
            bench_json_kv(f, &first, "transport", "rediss");
        if (r->c.cluster)
            bench_json_kv(f, &first, "transport", "redis+cluster");
        if (r->c.cluster && r->c.kind == BENCH_KIND_LATENCY) {
            bench_json_kd(f, &first, "loop_iteration_max_ms", r->iter_max_ms);
            bench_json_kd(f, &first, "loop_iteration_cpu_max_ms", r->iter_cpu_max_ms);
            bench_json_kd(f, &first, "loop_iteration_cpu_extra_max_ms", r->iter_extra_ms);
            bench_json_kd(f, &first, "timer_1ms_late_max_ms", r->timer_late_ms);
            bench_json_ku(f, &first, "refreshes", r->refreshes);
        }
        if (r->c.via_proxy) {
            bench_json_kv(f, &first, "delay_method", "user-space delaying TCP proxy");
            bench_json_ku(f, &first, "delay_ms", e->delay_ms);
        }
        if (r->rss_1m_kb > 0) {
            bench_json_ku(f, &first, "rss_after_1m_kb", (uint64_t)r->rss_1m_kb);
            bench_json_ku(f, &first, "rss_end_kb", (uint64_t)(r->rss_end_kb > 0 ? r->rss_end_kb : 0));
        }
        bench_json_ku(f, &first, "errors", r->errors);
        fputs(k + 1 < n ? "},\n" : "}\n", f);
    }
    fputs("  ],\n  \"targets\": [\n", f);
    for (size_t k = 0; k < nt; k++) {
        const bench_target *t = &ts[k];
        first = 1;
        fputs("    {", f);
        bench_json_kv(f, &first, "scenario", t->name);
        bench_json_kv(f, &first, "what", t->what);
        bench_json_kv(f, &first, "unit", bench_target_unit(t));
        if (t->status == BENCH_TARGET_MET || t->status == BENCH_TARGET_NOT_MET)
            bench_json_kd(f, &first, "value", t->value);
        else
            bench_json_knull(f, &first, "value");
        bench_json_kv(f, &first, "op", bench_target_op(t));
        bench_json_kd(f, &first, "bound", t->bound);
        bench_json_kv(f, &first, "status", bench_target_status(t));
        if (t->status == BENCH_TARGET_MET || t->status == BENCH_TARGET_NOT_MET) {
            fputs(", \"met\": ", f);
            fputs(t->status == BENCH_TARGET_MET ? "true" : "false", f);
        } else {
            bench_json_knull(f, &first, "met");
        }
        if (t->note[0])
            bench_json_kv(f, &first, "note", t->note);
        fputs(k + 1 < nt ? "},\n" : "}\n", f);
    }
    fputs("  ],\n  \"machine\": {", f);
    first = 1;
    bench_json_ku(f, &first, "nproc", (uint64_t)sysconf(_SC_NPROCESSORS_ONLN));
    bench_cpu_model(buf, sizeof buf);
    bench_json_kv(f, &first, "model name", buf);
    if (uname(&un) == 0) {
        snprintf(buf, sizeof buf, "%s %s %s", un.sysname, un.release, un.machine);
        bench_json_kv(f, &first, "kernel", buf);
    }
    fputs("},\n  \"versions\": {", f);
    first = 1;
    bench_redis_version(e, buf, sizeof buf);
    bench_json_kv(f, &first, "redis-server", buf);
    bench_mysql_version(e, buf, sizeof buf);
    bench_json_kv(f, &first, "mariadbd", buf);
    snprintf(buf, sizeof buf, "%d.%d.%d", HIREDIS_MAJOR, HIREDIS_MINOR, HIREDIS_PATCH);
    bench_json_kv(f, &first, "hiredis", buf);
    bench_json_kv(f, &first, "Connector/C", MARIADB_PACKAGE_VERSION);
    snprintf(buf, sizeof buf, "%d.%d", ev_version_major(), ev_version_minor());
    bench_json_kv(f, &first, "libev", buf);
    bench_json_kv(f, &first, "volley", vl_version());
    fputs("},\n  ", f);
    gmtime_r(&now, &tm);
    strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    first = 1;
    bench_json_kv(f, &first, "date", buf);
    fputs("\n}\n", f);
    if (fclose(f) != 0) {
        perror(path);
        return -1;
    }
    return 0;
}
