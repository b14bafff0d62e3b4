/* SPDX-License-Identifier: BSD-3-Clause */
/* tools/examples/http_api_threads.c - the comparison build of http_api.c:
 * the same routes and bodies, served the Flask way, with a thread per
 * connection (MHD_USE_THREAD_PER_CONNECTION) that makes blocking hiredis
 * calls on a Redis connection of its own, and a thread per task.
 *
 *   http_api_threads --listen PORT --redis redis://HOST:PORT [--threads N]
 *                    [--keep-tasks N]
 *
 * Only redis://HOST:PORT URLs are understood (no password, no database):
 * it exists to be measured against the volley build, not to be deployed.
 * --threads is accepted for the same command line and not used: every
 * connection and every task has a thread. Every Redis call has a timeout,
 * so a dead Redis gives a 503, never a hang.
 */
#include "http_api.h"

#include <arpa/inet.h>
#include <hiredis.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

typedef struct srv {
    char host[128];
    int port;
    pthread_key_t redis_key; /* each connection thread's redisContext */
    pthread_mutex_t lock;    /* guards tasks */
    pthread_cond_t idle;     /* signalled when a task ends */
    api_tasks tasks;
} srv;

static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void redis_drop(void *c)
{
    redisFree(c);
}

/* A command on this thread's connection, opened on first use and dropped
 * after an I/O error. Returns the reply (the caller frees it), or NULL
 * with the error in err. */
static redisReply *redis_call(srv *s, int argc, const char **argv, const size_t *lens,
                              char *err, size_t errlen)
{
    struct timeval connect_tv = {1, 0}, command_tv = {API_RED_DEADLINE_MS / 1000, 0};
    redisContext *c = pthread_getspecific(s->redis_key);
    redisReply *rep;

    if (c == NULL) {
        c = redisConnectWithTimeout(s->host, s->port, connect_tv);
        if (c == NULL || c->err != 0 || redisSetTimeout(c, command_tv) != REDIS_OK) {
            snprintf(err, errlen, "connect %s:%d: %s", s->host, s->port,
                     c != NULL ? c->errstr : "out of memory");
            redisFree(c);
            return NULL;
        }
        pthread_setspecific(s->redis_key, c);
    }
    rep = redisCommandArgv(c, argc, argv, lens);
    if (rep == NULL) {
        snprintf(err, errlen, "%s: %s", argv[0], c->errstr);
        pthread_setspecific(s->redis_key, NULL);
        redisFree(c);
    }
    return rep;
}

/* The answer to a reply that is missing (503) or a server error (502);
 * MHD_NO when the reply is fine. */
static int redis_failed(struct MHD_Connection *conn, redisReply *rep, const char *err,
                        enum MHD_Result *rc)
{
    char msg[600];

    if (rep != NULL && rep->type != REDIS_REPLY_ERROR)
        return 0;
    snprintf(msg, sizeof(msg), "redis: %.500s", rep != NULL ? rep->str : err);
    *rc = api_respond_error(conn, rep != NULL ? MHD_HTTP_BAD_GATEWAY
                                              : MHD_HTTP_SERVICE_UNAVAILABLE, msg);
    freeReplyObject(rep);
    return 1;
}

static enum MHD_Result red(srv *s, struct MHD_Connection *conn)
{
    api_red_args q;
    const char *bad = api_red_args_get(conn, &q);
    const char *argv[4] = {"HSET", q.key, q.field, q.value};
    size_t lens[4] = {4, q.key_len, q.field_len, q.value_len};
    char err[512];
    redisReply *rep;
    enum MHD_Result rc;
    json_t *obj;

    if (bad != NULL)
        return api_respond_error(conn, MHD_HTTP_BAD_REQUEST, bad);
    rep = redis_call(s, 4, argv, lens, err, sizeof(err));
    if (redis_failed(conn, rep, err, &rc))
        return rc;
    freeReplyObject(rep);
    argv[0] = "HGETALL";
    lens[0] = 7;
    rep = redis_call(s, 2, argv, lens, err, sizeof(err));
    if (redis_failed(conn, rep, err, &rc))
        return rc;
    obj = json_object();
    for (size_t i = 0; obj != NULL && rep->type == REDIS_REPLY_ARRAY && i + 1 < rep->elements;
         i += 2) {
        redisReply *k = rep->element[i], *v = rep->element[i + 1];

        if (api_hash_add(obj, k->str, k->len, v->str, v->len) != 0) {
            json_decref(obj);
            freeReplyObject(rep);
            return api_respond_error(conn, MHD_HTTP_BAD_GATEWAY,
                                     "the hash holds a field that is not UTF-8");
        }
    }
    freeReplyObject(rep);
    return api_respond(conn, MHD_HTTP_OK, api_dump(obj));
}

static enum MHD_Result health(srv *s, struct MHD_Connection *conn)
{
    const char *argv[1] = {"PING"};
    size_t lens[1] = {4};
    char err[512];
    redisReply *rep = redis_call(s, 1, argv, lens, err, sizeof(err));
    int up = rep != NULL && rep->type == REDIS_REPLY_STATUS;

    if (!up && rep != NULL)
        snprintf(err, sizeof(err), "%.500s", rep->type == REDIS_REPLY_ERROR ? rep->str : "?");
    freeReplyObject(rep);
    if (up)
        return api_respond(conn, MHD_HTTP_OK, api_dump(json_pack("{s:s}", "status", "UP")));
    return api_respond(conn, MHD_HTTP_SERVICE_UNAVAILABLE,
                       api_dump(json_pack("{s:s,s:s}", "status", "DOWN", "redis", err)));
}

/* ---- Tasks: a thread each -------------------------------------------- */

typedef struct task_run {
    srv *s;
    api_task *k;
} task_run;

static void *task_thread(void *ud)
{
    task_run *t = ud;
    uint64_t *sum = api_task_job((void *)(uintptr_t)t->k->n);

    pthread_mutex_lock(&t->s->lock);
    api_tasks_finish(&t->s->tasks, t->k, sum, NULL, now_ms());
    pthread_cond_broadcast(&t->s->idle);
    pthread_mutex_unlock(&t->s->lock);
    free(sum);
    free(t);
    return NULL;
}

static enum MHD_Result task_new(srv *s, struct MHD_Connection *conn)
{
    uint64_t n, id = 0;
    int busy = 0, started = 0;
    task_run *t = malloc(sizeof(*t));
    pthread_t th;

    if (api_task_n(conn, &n) != 0) {
        free(t);
        return api_respond_error(conn, MHD_HTTP_BAD_REQUEST, "n must be 0..1000000");
    }
    pthread_mutex_lock(&s->lock);
    api_tasks_prune(&s->tasks, now_ms());
    if (t != NULL && (t->k = api_tasks_add(&s->tasks, n, &busy)) != NULL) {
        t->s = s;
        id = t->k->id;
        started = pthread_create(&th, NULL, task_thread, t) == 0;
        if (started)
            pthread_detach(th);
        else
            api_tasks_finish(&s->tasks, t->k, NULL, "cannot start a thread", now_ms());
    }
    pthread_mutex_unlock(&s->lock);
    if (started)
        return api_respond(conn, MHD_HTTP_ACCEPTED,
                           api_dump(json_pack("{s:I}", "id", (json_int_t)id)));
    free(t);
    return busy ? api_respond_error(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "too many tasks running")
                : api_respond(conn, 500, NULL);
}

static enum MHD_Result task_get(srv *s, struct MHD_Connection *conn, const char *url)
{
    uint64_t id;
    api_task *k;
    char *body = NULL;

    pthread_mutex_lock(&s->lock);
    api_tasks_prune(&s->tasks, now_ms());
    if (api_task_id(url, &id) == 0 && (k = api_tasks_find(&s->tasks, id)) != NULL)
        body = api_task_body(k);
    else
        id = 0;
    pthread_mutex_unlock(&s->lock);
    if (id == 0)
        return api_respond_error(conn, MHD_HTTP_NOT_FOUND, "no such task");
    return api_respond(conn, MHD_HTTP_OK, body);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    static int seen;
    enum api_route route = api_route_of(method, url);

    (void)version;
    (void)upload_data;
    if (*con_cls == NULL) {
        /* The first call only announces the request (its headers). */
        *con_cls = &seen;
        return MHD_YES;
    }
    if (*upload_data_size != 0) {
        *upload_data_size = 0;
        return MHD_YES;
    }
    switch (route) {
    case API_RED:
        return red(cls, conn);
    case API_TASK_NEW:
        return task_new(cls, conn);
    case API_TASK_GET:
        return task_get(cls, conn, url);
    case API_HEALTH:
        return health(cls, conn);
    default:
        return api_respond_route(conn, route);
    }
}

int main(int argc, char **argv)
{
    api_args args;
    srv s;
    struct sockaddr_in sa;
    struct MHD_Daemon *mhd;
    const union MHD_DaemonInfo *info;
    sigset_t sigs;
    int sig, end = 0;
    MHD_socket lfd;

    if (api_parse_args(argc, argv, &args) != 0)
        return 2;
    memset(&s, 0, sizeof(s));
    if (sscanf(args.redis_url, "redis://%127[^:/]:%d%n", s.host, &s.port, &end) != 2 ||
        args.redis_url[end] != '\0') {
        fprintf(stderr, "http_api_threads: only redis://HOST:PORT URLs\n");
        return 2;
    }
    /* The signals are taken by sigwait below, so every thread, MHD's
     * included, must have them blocked. */
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    pthread_key_create(&s.redis_key, redis_drop);
    pthread_mutex_init(&s.lock, NULL);
    pthread_cond_init(&s.idle, NULL);
    api_tasks_init(&s.tasks, args.keep_tasks);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)args.port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    mhd = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                               MHD_USE_ITC | MHD_USE_ERROR_LOG,
                           (uint16_t)args.port, NULL, NULL, on_request, &s, MHD_OPTION_SOCK_ADDR,
                           &sa, MHD_OPTION_CONNECTION_TIMEOUT, 30u, MHD_OPTION_END);
    if (mhd == NULL) {
        fprintf(stderr, "http_api_threads: cannot listen on 127.0.0.1:%u\n", args.port);
        return 1;
    }
    info = MHD_get_daemon_info(mhd, MHD_DAEMON_INFO_BIND_PORT);
    printf("listening on 127.0.0.1:%u\n", info != NULL ? (unsigned)info->port : args.port);
    fflush(stdout);
    sigwait(&sigs, &sig);
    /* MHD_stop_daemon shuts the connections' sockets, so a request still
     * waiting for Redis would go unanswered: stop accepting first and give
     * the requests in flight the longest Redis timeout to end (an idle
     * keep-alive connection then just waits it out). The task threads are
     * waited for before the table goes. */
    lfd = MHD_quiesce_daemon(mhd);
    for (int i = 0; i < 30; i++) {
        info = MHD_get_daemon_info(mhd, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
        if (info == NULL || info->num_connections == 0)
            break;
        nanosleep(&(struct timespec){0, 100000000L}, NULL);
    }
    MHD_stop_daemon(mhd);
    if (lfd != MHD_INVALID_SOCKET)
        close(lfd);
    pthread_mutex_lock(&s.lock);
    while (s.tasks.running > 0)
        pthread_cond_wait(&s.idle, &s.lock);
    pthread_mutex_unlock(&s.lock);
    api_tasks_free(&s.tasks);
    return 0;
}
