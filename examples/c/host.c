/* A C host program driving a wavecp simulation through the C ABI (include/wavecp.h):
 * the job jobs/square_dirichlet.toml with its left side made `external`, whose Dirichlet
 * values this host imposes node by node each step (the job's own sine, so the run is bitwise
 * the one `wavecp solve` makes of the job); output steps where `wavecp solve` writes them; the
 * state saved half-way and loaded into a second simulation that must finish bit for bit the
 * same. Writes the final field as "node value" lines to <out_dir>/c_field.txt.
 *
 * Build and run (capi/tests/hosts.rs does this):
 *   cargo build --release -p wavecp-capi
 *   cc -O2 -ffp-contract=off -Iinclude examples/c/host.c -Ltarget/release -lwavecp_c -lm \
 *      -Wl,-rpath,$PWD/target/release -o host
 *   ./host jobs/square_dirichlet.toml out [key=value ...]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "wavecp.h"

#define CHECK(call)                                                              \
    do {                                                                         \
        int rc_ = (call);                                                        \
        if (rc_ != WAVECP_OK) {                                                  \
            fprintf(stderr, "%s failed: %s: %s\n", #call,                         \
                    wavecp_status_name(rc_), wavecp_last_error());               \
            exit(2);                                                             \
        }                                                                        \
    } while (0)

/* The job's left-side value (boundary[0]: value 0.1, sine of 2 Hz) at time t. */
static double left_value(double t) { return 0.1 * sin(2.0 * M_PI * 2.0 * t); }

static wavecp_sim *make(const char *job, const char *out, int nsets, char **sets) {
    wavecp_sim *s = NULL;
    char buf[4096];
    CHECK(wavecp_sim_create(job, &s));
    CHECK(wavecp_sim_set(s, "boundary.0.kind=external"));
    snprintf(buf, sizeof buf, "output.path=\"%s\"", out);
    CHECK(wavecp_sim_set(s, buf));
    for (int i = 0; i < nsets; i++) CHECK(wavecp_sim_set(s, sets[i]));
    return s;
}

/* Imposes the left side's values for the next step, then takes it. */
static void step(wavecp_sim *s, double *vals, int64_t nb) {
    int64_t k;
    double dt, t_next;
    CHECK(wavecp_sim_step(s, &k));
    CHECK(wavecp_sim_dt(s, &dt));
    t_next = (double)(k + 1) * dt;
    for (int64_t i = 0; i < nb; i++) vals[i] = left_value(t_next);
    CHECK(wavecp_sim_set_boundary_values(s, "left", vals, nb));
    CHECK(wavecp_sim_advance(s, 1));
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s JOB OUT_DIR [key=value ...]\n", argv[0]);
        return 1;
    }
    if (wavecp_abi_version() / 10000 != WAVECP_ABI_MAJOR) {
        fprintf(stderr, "libwavecp_c has ABI %u, this host was built for %d.x\n",
                wavecp_abi_version(), WAVECP_ABI_MAJOR);
        return 1;
    }
    const char *job = argv[1], *dir = argv[2];
    const int every = 25; /* the job's output.every */
    char path[4096];
    snprintf(path, sizeof path, "%s/c.vtkhdf", dir);
    wavecp_sim *a = make(job, path, argc - 3, argv + 3);

    int64_t nsteps, n, nb, nrec;
    CHECK(wavecp_sim_num_steps(a, &nsteps));
    CHECK(wavecp_sim_num_nodes(a, &n));
    CHECK(wavecp_sim_boundary_nodes(a, "left", NULL, 0, &nb));
    int64_t *left = malloc(sizeof(int64_t) * (size_t)nb);
    double *vals = malloc(sizeof(double) * (size_t)nb);
    CHECK(wavecp_sim_boundary_nodes(a, "left", left, nb, &nb));
    printf("%lld nodes, %lld steps, %lld nodes on the left side\n", (long long)n,
           (long long)nsteps, (long long)nb);

    /* The run: output at step 0, every `every` steps and at the last, as `wavecp solve`. */
    int64_t half = nsteps / 2, bytes = 0;
    unsigned char *saved = NULL;
    CHECK(wavecp_sim_write_output(a));
    for (int64_t k = 0; k < nsteps; k++) {
        if (k == half) {
            CHECK(wavecp_sim_state_size(a, &bytes));
            saved = malloc((size_t)bytes);
            CHECK(wavecp_sim_save_state(a, saved, bytes));
        }
        step(a, vals, nb);
        if ((k + 1) % every == 0 || k + 1 == nsteps) CHECK(wavecp_sim_write_output(a));
    }
    CHECK(wavecp_sim_finish(a));
    double *u = malloc(sizeof(double) * (size_t)n), *u2 = malloc(sizeof(double) * (size_t)n);
    int64_t *ids = malloc(sizeof(int64_t) * (size_t)n);
    CHECK(wavecp_sim_get_field(a, u, n));
    CHECK(wavecp_sim_node_ids(a, ids, n));
    CHECK(wavecp_sim_num_receivers(a, &nrec));
    double *rec = malloc(sizeof(double) * (size_t)(nrec > 0 ? nrec : 1));
    CHECK(wavecp_sim_receivers(a, rec, nrec));
    double t;
    CHECK(wavecp_sim_time(a, &t));
    printf("t = %.6f, receiver 0 = %.17g\n", t, nrec > 0 ? rec[0] : 0.0);

    /* A second simulation of the same job, alive beside the first, from the saved state. */
    wavecp_sim *b = make(job, "", argc - 3, argv + 3);
    CHECK(wavecp_sim_load_state(b, saved, bytes));
    for (int64_t k = half; k < nsteps; k++) step(b, vals, nb);
    CHECK(wavecp_sim_get_field(b, u2, n));
    if (memcmp(u, u2, sizeof(double) * (size_t)n) != 0) {
        fprintf(stderr, "the run restarted from the saved state differs from the uninterrupted one\n");
        return 3;
    }
    printf("restart from step %lld: bitwise equal\n", (long long)half);

    snprintf(path, sizeof path, "%s/c_field.txt", dir);
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        return 1;
    }
    for (int64_t i = 0; i < n; i++) fprintf(f, "%lld %.17g\n", (long long)ids[i], u[i]);
    fclose(f);
    wavecp_sim_destroy(b);
    wavecp_sim_destroy(a);
    free(left); free(vals); free(saved); free(u); free(u2); free(ids); free(rec);
    return 0;
}
