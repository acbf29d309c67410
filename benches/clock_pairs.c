/* How often two clock reads taken one after the other are far apart: the
 * thread was preempted between them. rtrace converts a kernel receive time
 * (CLOCK_REALTIME) to CLOCK_MONOTONIC with such a pair, and so reads the
 * realtime clock between two monotonic reads and retries when they are
 * far apart (`clock::monotonic_and_unix_ns`). This counts, over N brackets
 * (monotonic, realtime, monotonic), those wider than 5 and 20 us.
 *
 *   cc -O2 -o /tmp/clock_pairs benches/clock_pairs.c && /tmp/clock_pairs 10000000
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static uint64_t read_ns(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 10000000;
    if (n <= 0) {
        fprintf(stderr, "usage: %s [PAIRS > 0]\n", argv[0]);
        return 2;
    }
    long over_5us = 0, over_20us = 0;
    uint64_t widest = 0, total = 0;
    for (long i = 0; i < n; i++) {
        uint64_t before = read_ns(CLOCK_MONOTONIC);
        (void)read_ns(CLOCK_REALTIME);
        uint64_t width = read_ns(CLOCK_MONOTONIC) - before;
        total += width;
        over_5us += width > 5000;
        over_20us += width > 20000;
        if (width > widest) widest = width;
    }
    printf("%ld brackets: mean %.1f ns, wider than 5 us: %ld, than 20 us: %ld, widest %.1f us\n",
           n, (double)total / n, over_5us, over_20us, widest / 1e3);
    return 0;
}
