/* SPDX-License-Identifier: BSD-3-Clause */
/* tools/examples/http_api.h - what the two builds of the HTTP example share:
 * the command line, the routes, the JSON bodies, the task job and the table
 * of tasks. http_api.c serves them from one volley loop; http_api_threads.c
 * is the thread-per-connection comparison with blocking hiredis calls.
 * Everything here is static inline, so that each build takes what it uses
 * without an unused-function warning.
 */
#ifndef HTTP_API_H
#define HTTP_API_H

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <microhttpd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A task sleeps this long (the blocking call a real job would make) and
 * then sums the squares of 1..n, n at most API_TASK_MAX_N so that the sum
 * fits in 63 bits. */
#define API_TASK_MS 1000
#define API_TASK_MAX_N 1000000u
#define API_TASK_DEFAULT_N 1000u
/* Bounds of the task table: tasks running at once (a POST past it gets a
 * 503), and finished tasks kept for GET /task/<id>, by count (--keep-tasks,
 * this by default) and by age. */
#define API_TASK_MAX_RUNNING 1024u
#define API_TASK_KEEP 1024u
#define API_TASK_TTL_MS 600000u
/* Deadlines of the Redis work of one request: /red's HSET and HGETALL
 * together, and the PING of /actuator/health. */
#define API_RED_DEADLINE_MS 2000u
#define API_HEALTH_DEADLINE_MS 1000u

typedef struct api_args {
    unsigned port;
    const char *redis_url;
    unsigned threads;
    size_t keep_tasks;
} api_args;

/* Parses --listen PORT --redis URL [--threads N] [--keep-tasks N]. Returns
 * 0, or prints the usage and returns -1. */
static inline int api_parse_args(int argc, char **argv, api_args *a)
{
    static const struct option opts[] = {
        {"listen", required_argument, NULL, 'l'},
        {"redis", required_argument, NULL, 'r'},
        {"threads", required_argument, NULL, 't'},
        {"keep-tasks", required_argument, NULL, 'k'},
        {NULL, 0, NULL, 0},
    };
    int c, have_port = 0;
    char *end;
    unsigned long v;

    a->port = 0;
    a->redis_url = NULL;
    a->threads = 4;
    a->keep_tasks = API_TASK_KEEP;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'l':
        case 't':
        case 'k':
            errno = 0;
            v = strtoul(optarg, &end, 10);
            if (errno != 0 || end == optarg || *end != '\0' || optarg[0] == '-' ||
                (c == 'l' && v > 65535) || (c == 't' && (v < 1 || v > 256)) ||
                (c == 'k' && v > 1000000))
                goto usage;
            if (c == 'l') {
                a->port = (unsigned)v;
                have_port = 1;
            } else if (c == 't') {
                a->threads = (unsigned)v;
            } else {
                a->keep_tasks = v;
            }
            break;
        case 'r':
            a->redis_url = optarg;
            break;
        default:
            goto usage;
        }
    }
    if (have_port && a->redis_url != NULL && optind == argc)
        return 0;
usage:
    fprintf(stderr,
            "usage: %s --listen PORT --redis URL [--threads N] [--keep-tasks N]\n"
            "  PORT 0 picks a free port; the port is printed on stdout.\n"
            "  --threads (1..256, default 4): threads for the task jobs.\n"
            "  --keep-tasks (default 1024): finished tasks kept for GET /task/<id>\n"
            "  (each for at most 10 minutes).\n",
            argv[0]);
    return -1;
}

/* ---- Routes ----------------------------------------------------------- */

enum api_route {
    API_NOT_FOUND,
    API_BAD_METHOD,
    API_RED,
    API_TASK_NEW,
    API_TASK_GET,
    API_HEALTH,
};

static inline enum api_route api_route_of(const char *method, const char *url)
{
    int get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    int post = strcmp(method, "POST") == 0;

    if (strcmp(url, "/red") == 0)
        return get ? API_RED : API_BAD_METHOD;
    if (strcmp(url, "/task") == 0)
        return post ? API_TASK_NEW : API_BAD_METHOD;
    if (strncmp(url, "/task/", 6) == 0)
        return get ? API_TASK_GET : API_BAD_METHOD;
    if (strcmp(url, "/actuator/health") == 0)
        return get ? API_HEALTH : API_BAD_METHOD;
    return API_NOT_FOUND;
}

/* A decimal number of at most `max` with nothing around it; 0 or -1. */
static inline int api_parse_u64(const char *s, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;

    if (s == NULL || *s == '\0')
        return -1;
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '9' || v > (max - (uint64_t)(*s - '0')) / 10)
            return -1;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    *out = v;
    return 0;
}

/* ---- Responses -------------------------------------------------------- */

/* The JSON text of `j` (consumed), malloc'd; NULL when out of memory or
 * when `j` is NULL. */
static inline char *api_dump(json_t *j)
{
    char *s = j != NULL ? json_dumps(j, JSON_COMPACT) : NULL;

    json_decref(j);
    return s;
}

/* {"error": msg}; a message that is not UTF-8 is replaced, since JSON
 * cannot carry it. */
static inline char *api_error_body(const char *msg)
{
    json_t *j = json_pack("{s:s}", "error", msg);

    return api_dump(j != NULL ? j : json_pack("{s:s}", "error", "(not UTF-8)"));
}

/* Queues `body` (malloc'd, consumed; NULL means out of memory) as a JSON
 * response. Returns what MHD_queue_response returned. */
static inline enum MHD_Result api_respond(struct MHD_Connection *conn, unsigned status,
                                          char *body)
{
    static char oom[] = "{\"error\":\"out of memory\"}";
    struct MHD_Response *resp;
    enum MHD_Result rc;

    if (body == NULL) {
        status = MHD_HTTP_INTERNAL_SERVER_ERROR;
        resp = MHD_create_response_from_buffer(strlen(oom), oom, MHD_RESPMEM_PERSISTENT);
    } else {
        resp = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
        if (resp == NULL)
            free(body);
    }
    if (resp == NULL)
        return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    rc = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return rc;
}

static inline enum MHD_Result api_respond_error(struct MHD_Connection *conn, unsigned status,
                                                const char *msg)
{
    return api_respond(conn, status, api_error_body(msg));
}

/* A route's answer when it is not one of the served ones. */
static inline enum MHD_Result api_respond_route(struct MHD_Connection *conn, enum api_route r)
{
    if (r == API_BAD_METHOD)
        return api_respond_error(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed");
    return api_respond_error(conn, MHD_HTTP_NOT_FOUND, "not found");
}

/* ---- /red --------------------------------------------------------------- */

/* The query of /red: key, field and value, as MHD decoded them (borrowed
 * from the connection, which keeps them until the request completes). */
typedef struct api_red_args {
    const char *key, *field, *value;
    size_t key_len, field_len, value_len;
} api_red_args;

static inline int api_utf8(const char *s, size_t len)
{
    json_t *j = json_stringn(s, len);

    json_decref(j);
    return j != NULL;
}

/* Reads /red's arguments. Returns NULL, or the message of a 400. */
static inline const char *api_red_args_get(struct MHD_Connection *conn, api_red_args *a)
{
    static const char *const names[3] = {"key", "field", "value"};
    const char **v[3] = {&a->key, &a->field, &a->value};
    size_t *len[3] = {&a->key_len, &a->field_len, &a->value_len};

    for (int i = 0; i < 3; i++) {
        if (MHD_lookup_connection_value_n(conn, MHD_GET_ARGUMENT_KIND, names[i],
                                          strlen(names[i]), v[i], len[i]) != MHD_YES ||
            *v[i] == NULL)
            return "key, field and value are required";
        /* The reply is JSON, which only carries UTF-8. */
        if (!api_utf8(*v[i], *len[i]))
            return "key, field and value must be UTF-8";
    }
    return NULL;
}

/* Adds one field of a hash to `obj`. Returns 0, or -1 when the field or its
 * value is not UTF-8 (the hash was written by someone else) or out of
 * memory. */
static inline int api_hash_add(json_t *obj, const char *k, size_t klen, const char *v,
                               size_t vlen)
{
    json_t *jv = json_stringn(v, vlen);

    return jv != NULL && json_object_setn_new(obj, k, klen, jv) == 0 ? 0 : -1;
}

/* ---- Tasks -------------------------------------------------------------- */

/* The job, on a worker thread: `ud` is n itself, so that the job owns no
 * memory that a cancel or a shutdown would have to free. Returns a malloc'd
 * uint64_t, or NULL when out of memory. */
static inline void *api_task_job(void *ud)
{
    uint64_t n = (uint64_t)(uintptr_t)ud, sum = 0;
    struct timespec ts = {API_TASK_MS / 1000, (API_TASK_MS % 1000) * 1000000L};
    uint64_t *out;

    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
    for (uint64_t k = 1; k <= n; k++)
        sum += k * k;
    out = malloc(sizeof(*out));
    if (out != NULL)
        *out = sum;
    return out;
}

enum { API_TASK_RUNNING, API_TASK_DONE, API_TASK_FAILED };

typedef struct api_task {
    struct api_task *next; /* in id order */
    uint64_t id, n, result, done_ms;
    int state;
    char *error;  /* API_TASK_FAILED: why */
    void *handle; /* the build's own: the future, while running */
    void *owner;  /* the build's own: what the job reports to */
} api_task;

/* The table: a list in id order, oldest first. Both builds use it from one
 * thread at a time (the loop's, or under the threads build's lock). */
typedef struct api_tasks {
    api_task *head, **tail;
    uint64_t next_id;
    size_t running, done, keep;
} api_tasks;

/* An empty table that keeps `keep` finished tasks. */
static inline void api_tasks_init(api_tasks *t, size_t keep)
{
    memset(t, 0, sizeof(*t));
    t->tail = &t->head;
    t->keep = keep;
}

/* A new running task, appended; NULL when out of memory or when
 * API_TASK_MAX_RUNNING run already (*busy is then set). */
static inline api_task *api_tasks_add(api_tasks *t, uint64_t n, int *busy)
{
    api_task *k;

    *busy = t->running >= API_TASK_MAX_RUNNING;
    if (*busy || (k = calloc(1, sizeof(*k))) == NULL)
        return NULL;
    k->id = ++t->next_id;
    k->n = n;
    *t->tail = k;
    t->tail = &k->next;
    t->running++;
    return k;
}

/* Drops finished tasks older than API_TASK_TTL_MS, and the oldest finished
 * ones beyond t->keep. */
static inline void api_tasks_prune(api_tasks *t, uint64_t now_ms)
{
    api_task **pp = &t->head, *k;

    while ((k = *pp) != NULL) {
        if (k->state != API_TASK_RUNNING &&
            (t->done > t->keep || now_ms - k->done_ms > API_TASK_TTL_MS)) {
            *pp = k->next;
            t->done--;
            free(k->error);
            free(k);
        } else {
            pp = &k->next;
        }
    }
    t->tail = pp;
}

/* Records the end of a task: `result` (a uint64_t *, borrowed) or, when it
 * is NULL, `error`. */
static inline void api_tasks_finish(api_tasks *t, api_task *k, const uint64_t *result,
                                    const char *error, uint64_t now_ms)
{
    k->handle = NULL;
    k->done_ms = now_ms;
    if (result != NULL) {
        k->state = API_TASK_DONE;
        k->result = *result;
    } else {
        k->state = API_TASK_FAILED;
        k->error = strdup(error != NULL && *error != '\0' ? error : "out of memory");
    }
    t->running--;
    t->done++;
    api_tasks_prune(t, now_ms);
}

static inline api_task *api_tasks_find(const api_tasks *t, uint64_t id)
{
    for (api_task *k = t->head; k != NULL; k = k->next)
        if (k->id == id)
            return k;
    return NULL;
}

/* The body of GET /task/<id>. */
static inline char *api_task_body(const api_task *k)
{
    if (k->state == API_TASK_RUNNING)
        return api_dump(json_pack("{s:s}", "status", "running"));
    if (k->state == API_TASK_DONE)
        return api_dump(json_pack("{s:s,s:I,s:I}", "status", "done", "n", (json_int_t)k->n,
                                  "result", (json_int_t)k->result));
    return api_dump(json_pack("{s:s,s:s?}", "status", "failed", "error", k->error));
}

static inline void api_tasks_free(api_tasks *t)
{
    api_task *k, *next;

    for (k = t->head; k != NULL; k = next) {
        next = k->next;
        free(k->error);
        free(k);
    }
    api_tasks_init(t, t->keep);
}

/* The n of POST /task?n=N (API_TASK_DEFAULT_N without one). Returns 0, or
 * -1 for a bad n. */
static inline int api_task_n(struct MHD_Connection *conn, uint64_t *n)
{
    const char *s = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "n");

    *n = API_TASK_DEFAULT_N;
    return s == NULL ? 0 : api_parse_u64(s, API_TASK_MAX_N, n);
}

/* The id of GET /task/<id>. Returns 0, or -1 when it is no number. */
static inline int api_task_id(const char *url, uint64_t *id)
{
    return api_parse_u64(url + strlen("/task/"), UINT64_MAX, id);
}

#endif
