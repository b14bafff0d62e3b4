/* SPDX-License-Identifier: BSD-3-Clause */
/* tests/common/fixture.c - see fixture.h. */
#include "fixture.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* How long a fixture may take to print its port: python3 starts in well
 * under a second, but a loaded CI machine is slow. */
#define FIXTURE_START_MS 15000

void tu_fixture_start(tu_fixture *fx, const char *script, const char *scenario)
{
    const char *dir = getenv("VL_TEST_FIXTURES");
    char path[512], line[32];
    size_t got = 0;
    int fds[2];
    pid_t pid;

    memset(fx, 0, sizeof(*fx));
    snprintf(path, sizeof(path), "%s/%s", dir != NULL && dir[0] != '\0' ? dir : "tests/fixtures",
             script);
    assert_int_equal(pipe(fds), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        close(fds[1]);
        execlp("python3", "python3", path, scenario, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    while (got < sizeof(line) - 1) {
        struct pollfd p = {fds[0], POLLIN, 0};
        ssize_t n;

        if (poll(&p, 1, FIXTURE_START_MS) <= 0)
            break;
        n = read(fds[0], line + got, 1);
        if (n <= 0 || line[got] == '\n')
            break;
        got++;
    }
    close(fds[0]);
    line[got] = '\0';
    fx->pid = pid;
    fx->port = atoi(line);
    if (fx->port <= 0 || fx->port > 65535) {
        tu_fixture_stop(fx);
        fail_msg("fixture %s %s did not report a port (got '%s')", path, scenario, line);
    }
    snprintf(fx->url, sizeof(fx->url), "127.0.0.1:%d", fx->port);
}

void tu_fixture_stop(tu_fixture *fx)
{
    if (fx->pid <= 0)
        return;
    kill((pid_t)fx->pid, SIGKILL);
    while (waitpid((pid_t)fx->pid, NULL, 0) < 0 && errno == EINTR)
        ;
    fx->pid = 0;
}
