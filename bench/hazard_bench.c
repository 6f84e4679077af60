/*
 * hazard_bench.c - what the look for fork hazards costs in a process shaped
 * like a busy master: 100 files, a listening socket, two connected ones and
 * a thread.  A full scan (lib/hazard.c) against the change check that
 * replaces it between two forks of one generation, and against a listing of
 * /proc/self/fd alone, the change check's predecessor.
 *
 * Times, not instructions: the cost is in the kernel (procfs), which
 * callgrind does not count.  The three take turns round by round and each
 * is the median of its rounds, so a busy moment of the machine falls on all
 * of them; the ratios to the full scan are what to read.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/close_range.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "hazard.h"

#define FILES     100
#define ROUNDS    301
#define PER_ROUND 50

static double now_us(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

static int compare_doubles(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

static double median(double *values, size_t count)
{
    qsort(values, count, sizeof(*values), compare_doubles);
    return values[count / 2];
}

static void *idle_thread(void *arg)
{
    int fd = *(int *)arg;
    char byte;

    if (read(fd, &byte, 1) < 0)
        return NULL;
    return NULL;
}

static void die(const char *what)
{
    perror(what);
    exit(1);
}

/* A listener on 127.0.0.1, a client connected to it and the accepted end. */
static void connect_pair(void)
{
    struct sockaddr_in address = {.sin_family = AF_INET};
    socklen_t length = sizeof(address);
    int listener, client;

    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    listener = socket(AF_INET, SOCK_STREAM, 0);
    if (listener < 0 || bind(listener, (struct sockaddr *)&address, sizeof(address)) != 0 ||
        listen(listener, 1) != 0 ||
        getsockname(listener, (struct sockaddr *)&address, &length) != 0)
        die("listener");
    client = socket(AF_INET, SOCK_STREAM, 0);
    if (client < 0 || connect(client, (struct sockaddr *)&address, sizeof(address)) != 0 ||
        accept(listener, NULL, NULL) < 0)
        die("connect");
}

static void list_fds(void)
{
    DIR *listing = opendir("/proc/self/fd");
    volatile size_t entries = 0;

    if (!listing)
        die("/proc/self/fd");
    while (readdir(listing))
        entries++;
    closedir(listing);
}

int main(void)
{
    static double full[ROUNDS], check[ROUNDS], listing[ROUNDS];
    forksafe__hazard_list found = {0};
    forksafe__hazards_mark mark = {0};
    pthread_t thread;
    int stop[2], i, k;

    /* What a shell or a runner handed down (a shell's 255) would leave a
     * gap no master has: the bench's table is its own. */
    close_range(3, ~0U, 0);
    for (i = 0; i < FILES; i++)
        if (open("/dev/null", O_RDONLY) < 0)
            die("/dev/null");
    connect_pair();
    if (pipe(stop) != 0 || pthread_create(&thread, NULL, idle_thread, &stop[0]) != 0)
        die("thread");
    if (forksafe__hazards_scan(NULL, &found, &mark) != 0 || !forksafe__hazards_unchanged(&mark))
        die("scan");

    for (i = 0; i < ROUNDS; i++) {
        double start = now_us();
        for (k = 0; k < PER_ROUND; k++)
            forksafe__hazards_scan(NULL, &found, &mark);
        full[i] = (now_us() - start) / PER_ROUND;
        start = now_us();
        for (k = 0; k < PER_ROUND; k++)
            if (!forksafe__hazards_unchanged(&mark))
                die("the change check saw a change where there was none");
        check[i] = (now_us() - start) / PER_ROUND;
        start = now_us();
        for (k = 0; k < PER_ROUND; k++)
            list_fds();
        listing[i] = (now_us() - start) / PER_ROUND;
    }
    {
        double f = median(full, ROUNDS), c = median(check, ROUNDS), l = median(listing, ROUNDS);

        printf("fork-hazard look, %d files + 3 sockets + 1 thread open, %zu hazards found; "
               "median of %d rounds x %d:\n",
               FILES, found.count, ROUNDS, PER_ROUND);
        printf("  full scan                 %7.2f us  1.000x  (baseline)\n", f);
        printf("  change check              %7.2f us  %.3fx  (between two forks of a generation)\n",
               c, c / f);
        printf("  listing /proc/self/fd     %7.2f us  %.3fx  (what the check no longer reads)\n", l,
               l / f);
    }
    if (write(stop[1], "x", 1) != 1 || pthread_join(thread, NULL) != 0)
        die("join");
    forksafe__hazards_mark_free(&mark);
    forksafe__hazard_list_free(&found);
    return 0;
}
