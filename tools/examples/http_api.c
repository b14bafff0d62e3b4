/* SPDX-License-Identifier: BSD-3-Clause */
/* tools/examples/http_api.c - an HTTP API on a Redis pool and a task runner,
 * on one volley loop.
 *
 *   http_api --listen PORT --redis URL [--threads N] [--keep-tasks N]
 *
 *   GET  /red?key=K&field=F&value=V  HSET K F V, then HGETALL K: the hash
 *   POST /task[?n=N]                 a ~1 s job on a worker thread: {"id":N}
 *   GET  /task/<id>                  {"status":"running"} or
 *                                    {"status":"done","n":N,"result":S}
 *   GET  /actuator/health            {"status":"UP"}, or 503 "DOWN"
 *
 * libmicrohttpd runs in external-loop mode on the volley loop: its epoll
 * descriptor is watched by an ev_io and its timeout by an ev_timer, and
 * MHD_run follows each. A request that needs Redis or a worker suspends its
 * connection, starts volley futures and returns; the future's callback
 * queues the response and resumes the connection. Nothing blocks the loop,
 * and every Redis request has a deadline, so a dead Redis gives a 503
 * within it instead of a hang. SIGTERM or SIGINT answers what is still
 * suspended with a 503, stops MHD, frees the pool and exits 0.
 */
#include "http_api.h"

#include <arpa/inet.h>
#include <ev.h>
#include <netinet/in.h>
#include <signal.h>
#include <volley.h>

typedef struct api api;

/* One HTTP request, from MHD's first call of the handler until both MHD is
 * done with it (conn NULL) and no future of it is pending (fut NULL). */
typedef struct req {
    api *a;
    struct MHD_Connection *conn; /* NULL once MHD completed the request */
    vl_future *fut;              /* the pending volley work */
    struct req *prev, *next;     /* in api.suspended while suspended */
    int suspended;
    char *key; /* /red's key, for the HGETALL after the HSET */
    size_t key_len;
} req;

struct api {
    vl_loop *loop;
    struct MHD_Daemon *mhd; /* NULL once stopping */
    ev_io mhd_io;
    ev_timer mhd_timer;
    ev_signal sigterm, sigint;
    vl_redis_pool *pool;
    req *suspended;
    api_tasks tasks;
};

/* ---- MHD on the loop ------------------------------------------------- */

/* Lets MHD do its work, then arms the timer for its next timeout. Runs
 * after every event of its descriptor, after a resume and on its timer. A
 * request may complete in here (on_completed), freeing its req. */
static void mhd_kick(api *a)
{
    MHD_UNSIGNED_LONG_LONG ms;

    if (a->mhd == NULL)
        return;
    MHD_run(a->mhd);
    ev_timer_stop(vl_loop_ev(a->loop), &a->mhd_timer);
    if (MHD_get_timeout(a->mhd, &ms) == MHD_YES) {
        ev_timer_set(&a->mhd_timer, (double)ms / 1000.0, 0.);
        ev_timer_start(vl_loop_ev(a->loop), &a->mhd_timer);
    }
}

static void on_mhd_io(struct ev_loop *ev, ev_io *w, int revents)
{
    (void)ev;
    (void)revents;
    mhd_kick(w->data);
}

static void on_mhd_timer(struct ev_loop *ev, ev_timer *w, int revents)
{
    (void)ev;
    (void)revents;
    mhd_kick(w->data);
}

/* ---- Requests ----------------------------------------------------------- */

static void req_free(req *r)
{
    free(r->key);
    free(r);
}

static void req_unlink(req *r)
{
    api *a = r->a;

    if (r->prev != NULL)
        r->prev->next = r->next;
    else
        a->suspended = r->next;
    if (r->next != NULL)
        r->next->prev = r->prev;
    r->prev = r->next = NULL;
    r->suspended = 0;
}

/* Parks the request on `f` (NULL: out of memory): `done` answers it. */
static enum MHD_Result req_suspend(req *r, vl_future *f, vl_future_cb done)
{
    api *a = r->a;

    if (f == NULL)
        return api_respond(r->conn, 500, NULL);
    if (vl_future_then(f, done, r) != VL_OK) {
        vl_future_free(f);
        return api_respond(r->conn, 500, NULL);
    }
    r->fut = f;
    r->suspended = 1;
    r->next = a->suspended;
    if (a->suspended != NULL)
        a->suspended->prev = r;
    a->suspended = r;
    MHD_suspend_connection(r->conn);
    return MHD_YES;
}

/* Answers a parked request from its future's callback: `body` is
 * consumed. The request may be gone by the time this returns. */
static void req_answer(req *r, unsigned status, char *body)
{
    api *a = r->a;

    r->fut = NULL;
    if (r->conn == NULL) {
        /* MHD completed it meanwhile (a shutdown): nobody to answer. */
        free(body);
        req_free(r);
        return;
    }
    if (!r->suspended) {
        /* The shutdown answered it already; MHD frees it in on_completed. */
        free(body);
        return;
    }
    req_unlink(r);
    api_respond(r->conn, status, body);
    MHD_resume_connection(r->conn);
    mhd_kick(a);
}

/* A failed Redis future's answer: a server error is the server's (502),
 * anything else (no connection, a deadline) means Redis is unavailable. */
static void req_answer_failure(req *r, vl_future *f)
{
    int st = vl_future_status(f);
    char msg[512];

    snprintf(msg, sizeof(msg), "redis: %s: %s", vl_strerror(st), vl_future_error(f));
    req_answer(r, st == VL_ESERVER ? MHD_HTTP_BAD_GATEWAY : MHD_HTTP_SERVICE_UNAVAILABLE,
               api_error_body(msg));
}

/* MHD is done with a request (answered, or the connection went away). */
static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    req *r = *con_cls;

    (void)cls;
    (void)conn;
    (void)toe;
    if (r == NULL)
        return;
    *con_cls = NULL;
    r->conn = NULL;
    if (r->suspended)
        req_unlink(r);
    /* A pending future's callback frees the request; cancelling makes it
     * come now rather than at its deadline. */
    if (r->fut != NULL)
        vl_future_cancel(r->fut);
    else
        req_free(r);
}

/* ---- GET /red ------------------------------------------------------------ */

static vl_future *red_hgetall(vl_future *hset, void *ud)
{
    req *r = ud;
    const char *argv[2] = {"HGETALL", r->key};
    size_t lens[2] = {7, r->key_len};

    (void)hset;
    return vl_redis_pool_command_argv(r->a->pool, 2, argv, lens);
}

static void red_done(vl_future *f, void *ud)
{
    req *r = ud;
    const vl_redis_reply *rep = vl_future_redis_reply(f);
    json_t *obj;
    size_t n;

    if (vl_future_status(f) != VL_OK) {
        req_answer_failure(r, f);
        return;
    }
    obj = json_object();
    n = vl_redis_reply_map_count(rep);
    for (size_t i = 0; i < n && obj != NULL; i++) {
        size_t kl, vlen;
        const char *k = vl_redis_reply_str(vl_redis_reply_map_key(rep, i), &kl);
        const char *v = vl_redis_reply_str(vl_redis_reply_map_value(rep, i), &vlen);

        if (k == NULL || v == NULL || api_hash_add(obj, k, kl, v, vlen) != 0) {
            json_decref(obj);
            req_answer(r, MHD_HTTP_BAD_GATEWAY,
                       api_error_body("the hash holds a field that is not UTF-8"));
            return;
        }
    }
    req_answer(r, MHD_HTTP_OK, api_dump(obj));
}

static enum MHD_Result red_start(req *r)
{
    api_red_args q;
    const char *bad = api_red_args_get(r->conn, &q);
    const char *argv[4] = {"HSET", q.key, q.field, q.value};
    size_t lens[4] = {4, q.key_len, q.field_len, q.value_len};
    vl_future *f;

    if (bad != NULL)
        return api_respond_error(r->conn, MHD_HTTP_BAD_REQUEST, bad);
    r->key = malloc(q.key_len + 1);
    if (r->key == NULL)
        return api_respond(r->conn, 500, NULL);
    memcpy(r->key, q.key, q.key_len + 1);
    r->key_len = q.key_len;
    f = vl_future_chain(vl_redis_pool_command_argv(r->a->pool, 4, argv, lens), red_hgetall, r);
    return req_suspend(r, vl_future_timeout(f, API_RED_DEADLINE_MS), red_done);
}

/* ---- GET /actuator/health ----------------------------------------------- */

static void health_done(vl_future *f, void *ud)
{
    req *r = ud;
    char msg[512];

    if (vl_future_status(f) == VL_OK) {
        req_answer(r, MHD_HTTP_OK, api_dump(json_pack("{s:s}", "status", "UP")));
        return;
    }
    snprintf(msg, sizeof(msg), "%s: %s", vl_strerror(vl_future_status(f)), vl_future_error(f));
    req_answer(r, MHD_HTTP_SERVICE_UNAVAILABLE,
               api_dump(json_pack("{s:s,s:s}", "status", "DOWN", "redis", msg)));
}

static enum MHD_Result health_start(req *r)
{
    vl_future *f = vl_redis_pool_command(r->a->pool, "PING");

    return req_suspend(r, vl_future_timeout(f, API_HEALTH_DEADLINE_MS), health_done);
}

/* ---- Tasks ----------------------------------------------------------------- */

static void task_done(vl_future *f, void *ud)
{
    api_task *k = ud;
    api *a = k->owner;

    api_tasks_finish(&a->tasks, k, vl_future_status(f) == VL_OK ? vl_future_value(f) : NULL,
                     vl_future_error(f), vl_loop_now_ms(a->loop));
}

static enum MHD_Result task_start(req *r)
{
    api *a = r->a;
    uint64_t n;
    int busy;
    api_task *k;
    vl_future *f;

    if (api_task_n(r->conn, &n) != 0)
        return api_respond_error(r->conn, MHD_HTTP_BAD_REQUEST, "n must be 0..1000000");
    api_tasks_prune(&a->tasks, vl_loop_now_ms(a->loop));
    k = api_tasks_add(&a->tasks, n, &busy);
    if (k == NULL)
        return busy ? api_respond_error(r->conn, MHD_HTTP_SERVICE_UNAVAILABLE,
                                        "too many tasks running")
                    : api_respond(r->conn, 500, NULL);
    k->owner = a;
    /* n travels as the pointer itself: the job owns no memory, so neither
     * a cancel nor a shutdown before it ran has anything to free. */
    f = vl_loop_run_in_thread(a->loop, api_task_job, (void *)(uintptr_t)n, free);
    if (f == NULL || vl_future_then(f, task_done, k) != VL_OK) {
        vl_future_free(f);
        api_tasks_finish(&a->tasks, k, NULL, "out of memory", vl_loop_now_ms(a->loop));
        return api_respond(r->conn, 500, NULL);
    }
    k->handle = f;
    return api_respond(r->conn, MHD_HTTP_ACCEPTED,
                       api_dump(json_pack("{s:I}", "id", (json_int_t)k->id)));
}

static enum MHD_Result task_get(req *r, const char *url)
{
    api *a = r->a;
    uint64_t id;
    api_task *k;

    api_tasks_prune(&a->tasks, vl_loop_now_ms(a->loop));
    if (api_task_id(url, &id) != 0 || (k = api_tasks_find(&a->tasks, id)) == NULL)
        return api_respond_error(r->conn, MHD_HTTP_NOT_FOUND, "no such task");
    return api_respond(r->conn, MHD_HTTP_OK, api_task_body(k));
}

/* ---- The handler ------------------------------------------------------ */

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    api *a = cls;
    req *r = *con_cls;
    enum api_route route;

    (void)version;
    (void)upload_data;
    if (r == NULL) {
        /* The first call only announces the request (its headers). */
        r = calloc(1, sizeof(*r));
        if (r == NULL)
            return MHD_NO;
        r->a = a;
        r->conn = conn;
        *con_cls = r;
        return MHD_YES;
    }
    if (*upload_data_size != 0) {
        /* No route reads a body: it is skipped. */
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (r->fut != NULL)
        return MHD_YES;
    route = api_route_of(method, url);
    switch (route) {
    case API_RED:
        return red_start(r);
    case API_TASK_NEW:
        return task_start(r);
    case API_TASK_GET:
        return task_get(r, url);
    case API_HEALTH:
        return health_start(r);
    default:
        return api_respond_route(conn, route);
    }
}

/* ---- Shutdown and main -------------------------------------------------- */

/* SIGTERM or SIGINT: MHD must not be stopped with suspended connections,
 * so they are answered and resumed first and their futures cancelled;
 * then MHD stops, the running tasks are cancelled and the pool is freed.
 * vl_loop_run returns once the cancelled callbacks have run. */
static void on_signal(struct ev_loop *ev, ev_signal *w, int revents)
{
    api *a = w->data;
    struct MHD_Daemon *mhd = a->mhd;

    (void)revents;
    if (mhd == NULL)
        return;
    ev_signal_stop(ev, &a->sigterm);
    ev_signal_stop(ev, &a->sigint);
    ev_io_stop(ev, &a->mhd_io);
    ev_timer_stop(ev, &a->mhd_timer);
    while (a->suspended != NULL) {
        req *r = a->suspended;
        vl_future *f = r->fut;

        req_unlink(r);
        api_respond_error(r->conn, MHD_HTTP_SERVICE_UNAVAILABLE, "shutting down");
        MHD_resume_connection(r->conn);
        vl_future_cancel(f);
    }
    MHD_run(mhd);
    a->mhd = NULL;
    MHD_stop_daemon(mhd);
    for (api_task *k = a->tasks.head; k != NULL; k = k->next)
        if (k->handle != NULL)
            vl_future_cancel(k->handle);
    vl_redis_pool_free(a->pool);
    a->pool = NULL;
}

static struct MHD_Daemon *mhd_start(api *a, unsigned port)
{
    struct sockaddr_in sa;

    /* Loopback only: an example is not a public service. */
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return MHD_start_daemon(MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG,
                            (uint16_t)port, NULL, NULL, on_request, a, MHD_OPTION_SOCK_ADDR,
                            &sa, MHD_OPTION_NOTIFY_COMPLETED, on_completed, a,
                            MHD_OPTION_CONNECTION_TIMEOUT, 30u, MHD_OPTION_END);
}

int main(int argc, char **argv)
{
    api_args args;
    api a;
    vl_redis_pool_options o;
    const union MHD_DaemonInfo *info;
    struct ev_loop *ev;

    if (api_parse_args(argc, argv, &args) != 0)
        return 2;
    signal(SIGPIPE, SIG_IGN);
    memset(&a, 0, sizeof(a));
    api_tasks_init(&a.tasks, args.keep_tasks);
    a.loop = vl_loop_new();
    if (a.loop == NULL || vl_loop_set_threads(a.loop, args.threads) != VL_OK) {
        fprintf(stderr, "http_api: cannot make the loop\n");
        return 1;
    }
    ev = vl_loop_ev(a.loop);
    /* Deadlines below the request's own, so that a dead Redis fails a
     * command with its own message before the request's deadline. */
    vl_redis_pool_options_init(&o);
    o.connect_timeout_ms = 1000;
    o.command_timeout_ms = API_RED_DEADLINE_MS;
    o.acquire_timeout_ms = 1000;
    a.pool = vl_redis_pool_new(a.loop, args.redis_url, &o);
    a.mhd = a.pool != NULL ? mhd_start(&a, args.port) : NULL;
    info = a.mhd != NULL ? MHD_get_daemon_info(a.mhd, MHD_DAEMON_INFO_EPOLL_FD) : NULL;
    if (info == NULL) {
        fprintf(stderr, "http_api: cannot listen on 127.0.0.1:%u\n", args.port);
        if (a.mhd != NULL)
            MHD_stop_daemon(a.mhd);
        vl_loop_free(a.loop);
        return 1;
    }
    ev_io_init(&a.mhd_io, on_mhd_io, info->epoll_fd, EV_READ);
    a.mhd_io.data = &a;
    ev_io_start(ev, &a.mhd_io);
    ev_init(&a.mhd_timer, on_mhd_timer);
    a.mhd_timer.data = &a;
    ev_signal_init(&a.sigterm, on_signal, SIGTERM);
    a.sigterm.data = &a;
    ev_signal_start(ev, &a.sigterm);
    ev_signal_init(&a.sigint, on_signal, SIGINT);
    a.sigint.data = &a;
    ev_signal_start(ev, &a.sigint);
    info = MHD_get_daemon_info(a.mhd, MHD_DAEMON_INFO_BIND_PORT);
    printf("listening on 127.0.0.1:%u\n", info != NULL ? (unsigned)info->port : args.port);
    fflush(stdout);
    mhd_kick(&a);
    vl_loop_run(a.loop);
    vl_loop_free(a.loop);
    api_tasks_free(&a.tasks);
    return 0;
}
