/* What calling wavecp through the C ABI costs a host: the per-call cost of wavecp_sim_advance
 * (measured as advance(0): the handle lookup, lock, checks and panic guard, no step) and of a
 * field copy (wavecp_sim_get_field), each as a share of one time step, on a generated square of
 * about N nodes. Prints one JSON object per N (scripts/bench-capi runs it).
 *   overhead N [N ...]
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "wavecp.h"

#define CHECK(call)                                                                    \
    do {                                                                               \
        int rc_ = (call);                                                              \
        if (rc_ != WAVECP_OK) {                                                        \
            fprintf(stderr, "%s: %s: %s\n", #call, wavecp_status_name(rc_), wavecp_last_error()); \
            exit(2);                                                                   \
        }                                                                              \
    } while (0)

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp);
    return v[n / 2];
}

int main(int argc, char **argv) {
    for (int a = 1; a < argc; a++) {
        long target = atol(argv[a]);
        int nx = 1;
        while ((long)(nx + 1) * (nx + 1) < target) nx++;
        char path[] = "/tmp/wavecp_overhead_XXXXXX.toml";
        int fd = mkstemps(path, 5);
        FILE *f = fdopen(fd, "w");
        fprintf(f, "[mesh.generate]\nshape = \"quad\"\nnx = %d\nny = %d\n"
                   "[[source]]\nposition = [0.5, 0.5]\nfrequency = 4.0\n"
                   "[time]\nend = 1.0\n[output]\npath = \"\"\n", nx, nx);
        fclose(f);
        wavecp_sim *s;
        int64_t n;
        CHECK(wavecp_sim_create(path, &s));
        CHECK(wavecp_sim_num_nodes(s, &n));
        double *u = malloc(sizeof(double) * (size_t)n);
        enum { R = 15 };
        double step[R], copy[R], call[R];
        int reps = n > 100000 ? 1 : 20, calls = 20000;
        CHECK(wavecp_sim_advance(s, 5)); /* warm up */
        for (int r = 0; r < R; r++) {
            double t0 = now();
            for (int k = 0; k < reps; k++) CHECK(wavecp_sim_advance(s, 1));
            double t1 = now();
            for (int k = 0; k < reps; k++) CHECK(wavecp_sim_get_field(s, u, n));
            double t2 = now();
            for (int k = 0; k < calls; k++) CHECK(wavecp_sim_advance(s, 0));
            double t3 = now();
            step[r] = (t1 - t0) / reps;
            copy[r] = (t2 - t1) / reps;
            call[r] = (t3 - t2) / calls;
        }
        double st = median(step, R), cp = median(copy, R), ca = median(call, R);
        printf("{\"nodes\": %lld, \"step_s\": %.6e, \"advance_call_s\": %.6e, "
               "\"advance_call_share\": %.3e, \"get_field_s\": %.6e, \"get_field_share\": %.3e}\n",
               (long long)n, st, ca, ca / st, cp, cp / st);
        wavecp_sim_destroy(s);
        free(u);
        remove(path);
    }
    return 0;
}
