/* SPDX-License-Identifier: BSD-3-Clause */
/* proxy.c - a delaying TCP proxy that models remote hosts on loopback.
 *
 * The kernel here has no netem, so latency is added in user space: a child
 * process listens on one new loopback port per Redis server and forwards
 * every chunk it reads, in both directions, once delay/2 has passed since
 * it arrived. Each chunk carries its own due time, so pipelined requests
 * and requests on other connections are never queued behind each other's
 * delay: the proxy adds latency, not serialisation. It runs in its own
 * process so that its CPU time is not charged to the client under test.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <ev.h>

#include "bench.h"

typedef struct bench_chunk {
    struct bench_chunk *next;
    ev_tstamp due;
    size_t len, off;
    char data[];
} bench_chunk;

struct bench_pconn;

/* One direction of a proxied connection: read from `from`, write to `to`. */
typedef struct bench_pdir {
    ev_io rio, wio;
    ev_timer tm;
    int from, to;
    bench_chunk *head, *tail;
    struct bench_pconn *pc;
} bench_pdir;

typedef struct bench_pconn {
    bench_pdir up, down; /* client to server, server to client */
    int cfd, sfd;
} bench_pconn;

typedef struct bench_listener {
    ev_io io;
    int upstream_port;
} bench_listener;

static ev_tstamp bench_proxy_delay;

static void bench_nonblock(int fd)
{
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static void bench_pdir_stop(struct ev_loop *loop, bench_pdir *d)
{
    ev_io_stop(loop, &d->rio);
    ev_io_stop(loop, &d->wio);
    ev_timer_stop(loop, &d->tm);
    while (d->head) {
        bench_chunk *n = d->head->next;
        free(d->head);
        d->head = n;
    }
    d->tail = NULL;
}

/* A hang-up or error on either side ends the pair: the bench only closes
 * connections when it is done with them, so nothing is left to deliver. */
static void bench_pconn_close(struct ev_loop *loop, bench_pconn *pc)
{
    bench_pdir_stop(loop, &pc->up);
    bench_pdir_stop(loop, &pc->down);
    close(pc->cfd);
    close(pc->sfd);
    free(pc);
}

/* Writes every chunk that is due; arms the timer for the next one, or the
 * write watcher when the socket is full. */
static void bench_pdir_flush(struct ev_loop *loop, bench_pdir *d)
{
    ev_tstamp now = ev_now(loop);
    while (d->head && d->head->due <= now) {
        bench_chunk *ch = d->head;
        ssize_t w = write(d->to, ch->data + ch->off, ch->len - ch->off);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                ev_io_start(loop, &d->wio);
                return;
            }
            if (errno == EINTR)
                continue;
            bench_pconn_close(loop, d->pc);
            return;
        }
        ch->off += (size_t)w;
        if (ch->off < ch->len)
            continue;
        d->head = ch->next;
        if (d->head == NULL)
            d->tail = NULL;
        free(ch);
    }
    ev_io_stop(loop, &d->wio);
    if (d->head && !ev_is_active(&d->tm)) {
        ev_timer_set(&d->tm, d->head->due - now, 0.);
        ev_timer_start(loop, &d->tm);
    }
}

static void bench_pdir_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    bench_pdir *d = w->data;
    char buf[65536];
    (void)revents;
    ssize_t n = read(d->from, buf, sizeof buf);
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        bench_pconn_close(loop, d->pc);
        return;
    }
    bench_chunk *ch = malloc(sizeof *ch + (size_t)n);
    if (ch == NULL) {
        bench_pconn_close(loop, d->pc);
        return;
    }
    /* ev_now is the start of this loop iteration; refresh it so the delay
     * counts from the read, not from an earlier wake-up. */
    ev_now_update(loop);
    ch->next = NULL;
    ch->due = ev_now(loop) + bench_proxy_delay;
    ch->len = (size_t)n;
    ch->off = 0;
    memcpy(ch->data, buf, (size_t)n);
    if (d->tail)
        d->tail->next = ch;
    else
        d->head = ch;
    d->tail = ch;
    if (!ev_is_active(&d->tm) && !ev_is_active(&d->wio)) {
        ev_timer_set(&d->tm, bench_proxy_delay, 0.);
        ev_timer_start(loop, &d->tm);
    }
}

static void bench_pdir_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    bench_pdir_flush(loop, w->data);
}

static void bench_pdir_write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    bench_pdir_flush(loop, w->data);
}

static void bench_pdir_init(struct ev_loop *loop, bench_pconn *pc, bench_pdir *d, int from, int to)
{
    d->from = from;
    d->to = to;
    d->pc = pc;
    ev_io_init(&d->rio, bench_pdir_read_cb, from, EV_READ);
    ev_io_init(&d->wio, bench_pdir_write_cb, to, EV_WRITE);
    ev_timer_init(&d->tm, bench_pdir_timer_cb, 0., 0.);
    d->rio.data = d->wio.data = d->tm.data = d;
    ev_io_start(loop, &d->rio);
}

static void bench_accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    bench_listener *l = (bench_listener *)w;
    (void)revents;
    int cfd = accept(w->fd, NULL, NULL);
    if (cfd < 0)
        return;
    /* Connecting to a loopback server completes at once; a blocking
     * connect keeps the proxy simple. */
    int sfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons((uint16_t)l->upstream_port);
    if (sfd < 0 || connect(sfd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        if (sfd >= 0)
            close(sfd);
        close(cfd);
        return;
    }
    bench_nonblock(cfd);
    bench_nonblock(sfd);
    bench_pconn *pc = calloc(1, sizeof *pc);
    if (pc == NULL) {
        close(cfd);
        close(sfd);
        return;
    }
    pc->cfd = cfd;
    pc->sfd = sfd;
    bench_pdir_init(loop, pc, &pc->up, cfd, sfd);
    bench_pdir_init(loop, pc, &pc->down, sfd, cfd);
}

static int bench_listen(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    if (fd < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = 0; /* the kernel picks a free port */
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 1024) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
        close(fd);
        return -1;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    *port = ntohs(sa.sin_port);
    return fd;
}

static void bench_proxy_child(const int *ports, int n, int wfd)
{
    /* The proxy must never outlive the bench, even if the bench is killed. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_IGN); /* Ctrl-C goes to the bench, which stops us */
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    bench_listener *ls = calloc((size_t)n, sizeof *ls);
    int out[BENCH_MAX_HOSTS];
    if (loop == NULL || ls == NULL)
        _exit(1);
    for (int k = 0; k < n; k++) {
        int fd = bench_listen(&out[k]);
        if (fd < 0)
            _exit(1);
        ls[k].upstream_port = ports[k];
        ev_io_init(&ls[k].io, bench_accept_cb, fd, EV_READ);
        ev_io_start(loop, &ls[k].io);
    }
    if (write(wfd, out, sizeof out[0] * (size_t)n) != (ssize_t)(sizeof out[0] * (size_t)n))
        _exit(1);
    close(wfd);
    ev_run(loop, 0);
    _exit(0);
}

int bench_proxy_start(const int *ports, int n, unsigned delay_us, int *out_ports)
{
    int p[2];
    if (n <= 0 || n > BENCH_MAX_HOSTS || pipe(p) != 0)
        return -1;
    bench_proxy_delay = (double)delay_us / 2e6;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        close(p[0]);
        close(p[1]);
        return -1;
    }
    if (pid == 0) {
        close(p[0]);
        bench_proxy_child(ports, n, p[1]);
    }
    close(p[1]);
    size_t want = sizeof out_ports[0] * (size_t)n, got = 0;
    while (got < want) {
        ssize_t r = read(p[0], (char *)out_ports + got, want - got);
        if (r <= 0) {
            if (r < 0 && errno == EINTR)
                continue;
            break;
        }
        got += (size_t)r;
    }
    close(p[0]);
    if (got < want) {
        bench_proxy_stop(pid);
        return -1;
    }
    return pid;
}

void bench_proxy_stop(int pid)
{
    if (pid <= 0)
        return;
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
}
