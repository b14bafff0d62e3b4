/* SPDX-License-Identifier: BSD-3-Clause */
/* ref.c - the reference tools, run on the same servers in the same run:
 * redis-benchmark (GET with the scenario's -c and -P: -c 50, -c 50 -P 16,
 * -c 1 -P 1000, and with --tls on the TLS server) and mariadb-slap
 * (SELECT 1, --concurrency=8). Their throughput goes into the same table. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <mysql.h>

#include "bench.h"

/* Runs argv with stdout and stderr into buf. The password, when given, is
 * passed through the child's environment only (MYSQL_PWD), so it appears
 * neither on a command line nor in any output. Returns the exit status, or
 * -1. */
static int bench_capture(char *const argv[], const char *password, char *buf, size_t cap)
{
    int p[2];
    size_t len = 0;
    if (pipe(p) != 0)
        return -1;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        close(p[0]);
        close(p[1]);
        return -1;
    }
    if (pid == 0) {
        dup2(p[1], STDOUT_FILENO);
        dup2(p[1], STDERR_FILENO);
        close(p[0]);
        close(p[1]);
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (password)
            setenv("MYSQL_PWD", password, 1);
        execvp(argv[0], argv);
        fprintf(stderr, "cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(p[1]);
    for (;;) {
        ssize_t r = read(p[0], buf + len, cap - 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
        if (len == cap - 1)
            len = 0; /* keep reading; only the tail matters */
    }
    buf[len] = '\0';
    close(p[0]);
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

double bench_ref_redis_benchmark(const char *host, int port, int clients, int pipeline,
                                 uint64_t requests, size_t data_size, const char *cacert)
{
    char sport[16], sc[16], sn[32], sp[16], sd[32], out[8192];
    snprintf(sport, sizeof sport, "%d", port);
    snprintf(sc, sizeof sc, "%d", clients);
    snprintf(sn, sizeof sn, "%" PRIu64, requests);
    snprintf(sp, sizeof sp, "%d", pipeline > 0 ? pipeline : 1);
    snprintf(sd, sizeof sd, "%zu", data_size);
    char *argv[24] = {"redis-benchmark", "-h", (char *)host, "-p", sport, "-c", sc, "-n", sn,
                      "-P", sp, "-d", sd, "-t", "get", "-q", "--csv"};
    if (cacert) {
        size_t a = 17;
        argv[a++] = "--tls";
        argv[a++] = "--cacert";
        argv[a++] = (char *)cacert;
        argv[a] = NULL;
    }
    if (bench_capture(argv, NULL, out, sizeof out) != 0) {
        fprintf(stderr, "volley-bench: redis-benchmark failed: %.200s\n", out);
        return 0;
    }
    /* --csv prints a header, then "GET","<rps>",... */
    const char *row = strstr(out, "\"GET\",\"");
    return row ? strtod(row + 7, NULL) : 0;
}

double bench_ref_mariadb_slap(const bench_env *e, int concurrency, uint64_t queries, int point)
{
    char conc[48], nq[64], port[32], host[96], sock[300], user[128], out[8192], query[300];
    char *argv[16];
    int a = 0;
    /* mariadb-slap needs a schema to log in to and may drop it afterwards,
     * so it gets one of its own, made fresh for each run. */
    MYSQL *m = bench_mysql_connect(e, 0);
    if (m == NULL)
        return 0;
    int made = mysql_query(m, "CREATE DATABASE IF NOT EXISTS volley_bench_slap") == 0;
    mysql_close(m);
    if (!made)
        return 0;
    snprintf(conc, sizeof conc, "--concurrency=%d", concurrency);
    snprintf(nq, sizeof nq, "--number-of-queries=%" PRIu64, queries);
    snprintf(user, sizeof user, "--user=%s", e->mysql_user);
    argv[a++] = "mariadb-slap";
    argv[a++] = "--no-defaults";
    if (e->mysql_sock) {
        snprintf(sock, sizeof sock, "--socket=%s", e->mysql_sock);
        argv[a++] = sock;
    } else {
        snprintf(port, sizeof port, "--port=%d", e->mysql_port);
        snprintf(host, sizeof host, "--host=%s", e->mysql_host);
        argv[a++] = host;
        argv[a++] = port;
    }
    argv[a++] = user;
    argv[a++] = conc;
    argv[a++] = "--create-schema=volley_bench_slap";
    argv[a++] = "--iterations=1";
    argv[a++] = nq;
    /* The point select reads one row of the bench table by primary key,
     * like the other modes (mariadb-slap repeats one text, so one id). */
    if (point)
        snprintf(query, sizeof query, "--query=SELECT id, v FROM %s.bench_kv WHERE id = 4242",
                 e->mysql_db);
    else
        snprintf(query, sizeof query, "--query=SELECT 1");
    argv[a++] = query;
    argv[a] = NULL;
    /* It exits with 0 even when its clients could not connect. */
    if (bench_capture(argv, e->mysql_password, out, sizeof out) != 0 || strstr(out, "Error")) {
        fprintf(stderr, "volley-bench: mariadb-slap failed: %.200s\n", out);
        return 0;
    }
    const char *avg = strstr(out, "Average number of seconds to run all queries:");
    if (avg == NULL)
        return 0;
    double s = strtod(avg + strlen("Average number of seconds to run all queries:"), NULL);
    return s > 0 ? (double)queries / s : 0;
}
