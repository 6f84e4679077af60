/*
 * parse_bench.c - settings parse time for 100 / 1,000 / 10,000-key files.
 *
 * Prints the median of several runs per size and the per-key cost relative
 * to the 100-key file measured in the same invocation: the ratios are the
 * result (this machine is noisy), the milliseconds are context.  Linear
 * growth shows as per-key ratios near 1.0.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "forksafe_internal.h"

#define RUNS 15

static double now_seconds(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int compare_doubles(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

static void write_settings_file(const char *path, int keys)
{
    FILE *f = fopen(path, "w");
    int i;

    if (!f) {
        perror(path);
        exit(1);
    }
    fprintf(f, "[DEFAULT]\nroot = %%(here)s/var\n\n[app:main]\nuse = egg:bench\n");
    for (i = 0; i < keys; i++) {
        if (i % 4 == 0)
            fprintf(f, "bench.setting.%d = %%(root)s/file-%d\n", i, i);
        else if (i % 4 == 1)
            fprintf(f, "bench.setting.%d =\n    line one %d\n    line two\n", i, i);
        else
            fprintf(f, "bench.setting.%d = plain value number %d\n", i, i);
    }
    fclose(f);
}

static double median_load_seconds(const char *path, int keys)
{
    double samples[RUNS];
    int run;

    for (run = 0; run < RUNS; run++) {
        forksafe__settings settings;
        forksafe__error err = {0};
        double start = now_seconds();
        memset(&settings, 0, sizeof(settings));
        if (forksafe__settings_load(&settings, path, &err) != 0 ||
            settings.local.count != (size_t)keys) {
            fprintf(stderr, "load failed: %s\n", err.text);
            exit(1);
        }
        samples[run] = now_seconds() - start;
        forksafe__settings_free(&settings);
    }
    qsort(samples, RUNS, sizeof(samples[0]), compare_doubles);
    return samples[RUNS / 2];
}

int main(void)
{
    static const int sizes[] = {100, 1000, 10000};
    char directory[] = "/tmp/forksafe-bench-XXXXXX";
    double base_per_key = 0;
    size_t i;

    if (!mkdtemp(directory)) {
        perror("mkdtemp");
        return 1;
    }
    printf("settings parse time (median of %d runs; per-key cost vs the 100-key file)\n", RUNS);
    printf("%8s %12s %14s %10s\n", "keys", "median ms", "us per key", "per-key x");
    for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        char path[256];
        double seconds, per_key;
        snprintf(path, sizeof(path), "%s/settings-%d.ini", directory, sizes[i]);
        write_settings_file(path, sizes[i]);
        seconds = median_load_seconds(path, sizes[i]);
        per_key = seconds / sizes[i];
        if (i == 0)
            base_per_key = per_key;
        printf("%8d %12.3f %14.3f %10.2f\n", sizes[i], seconds * 1e3, per_key * 1e6,
               per_key / base_per_key);
        unlink(path);
    }
    rmdir(directory);
    return 0;
}
