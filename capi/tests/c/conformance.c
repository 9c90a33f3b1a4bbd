/* The call-order state machine of the C ABI, from C: every illegal call returns its status
 * code (named below) with a message, and the process survives to the end. Run by
 * capi/tests/hosts.rs, once plainly and once under valgrind (no invalid read or write).
 * Usage: conformance JOB OTHER_JOB   (OTHER_JOB: the same case on another mesh) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "wavecp.h"

static int failures = 0;

static void expect(int got, int want, const char *what) {
    const char *msg = wavecp_last_error();
    if (got != want) {
        fprintf(stderr, "FAIL %s: got %s, want %s (%s)\n", what, wavecp_status_name(got),
                wavecp_status_name(want), msg);
        failures++;
    } else if (want != WAVECP_OK && (msg == NULL || msg[0] == '\0')) {
        fprintf(stderr, "FAIL %s: %s without a message\n", what, wavecp_status_name(got));
        failures++;
    } else {
        printf("ok   %-58s %s%s%s\n", what, wavecp_status_name(got), want ? ": " : "",
               want ? msg : "");
    }
}

int main(int argc, char **argv) {
    if (argc < 3) return 1;
    const char *job = argv[1], *other = argv[2];
    wavecp_sim *s = NULL, *t = NULL;
    double x, u[4], big[100000];
    int64_t n = 0, ids[4], nb = 0;
    uint8_t junk[64];
    memset(junk, 7, sizeof junk);

    /* Creation. */
    expect(wavecp_sim_create(job, NULL), WAVECP_ERR_NULL, "create with out = NULL");
    expect(wavecp_sim_create(NULL, &s), WAVECP_ERR_NULL, "create with job = NULL");
    expect(wavecp_sim_create("/nonexistent/job.toml", &s), WAVECP_ERR_JOB, "create of a missing job");
    expect(wavecp_sim_create("\xff\xfe.toml", &s), WAVECP_ERR_ARG, "create with a non-UTF-8 path");
    expect(wavecp_sim_create_mpi(job, 0, &s), WAVECP_ERR_MPI, "create_mpi without MPI_Init");

    /* Calls on handles that are not live simulations. */
    expect(wavecp_sim_advance(NULL, 1), WAVECP_ERR_NULL, "advance(NULL) before any create");
    expect(wavecp_sim_advance((wavecp_sim *)0x1230, 1), WAVECP_ERR_HANDLE, "advance on a forged handle");

    /* Configuration before the build. */
    expect(wavecp_sim_create(job, &s), WAVECP_OK, "create");
    expect(wavecp_sim_set(s, "time.endd=1"), WAVECP_ERR_JOB, "set of an unknown key");
    expect(wavecp_sim_set(s, "time.end=-1"), WAVECP_ERR_JOB, "set of an impossible value");
    expect(wavecp_sim_set(s, "no equals sign"), WAVECP_ERR_JOB, "set without key=value");
    expect(wavecp_sim_set(s, NULL), WAVECP_ERR_NULL, "set(NULL)");
    expect(wavecp_sim_set(s, "time.end=0.05"), WAVECP_OK, "set time.end");

    /* Built by the first query; then no more sets. */
    expect(wavecp_sim_num_nodes(s, &n), WAVECP_OK, "num_nodes (builds the simulation)");
    expect(wavecp_sim_set(s, "time.end=0.1"), WAVECP_ERR_ORDER, "set after the build");
    expect(wavecp_sim_advance(s, -1), WAVECP_ERR_ARG, "advance(-1)");
    expect(wavecp_sim_time(s, NULL), WAVECP_ERR_NULL, "time with t = NULL");
    expect(wavecp_sim_get_field(s, u, 4), WAVECP_ERR_SIZE, "get_field with a wrong length");
    expect(wavecp_sim_get_field(s, NULL, n), WAVECP_ERR_NULL, "get_field into NULL");
    expect(wavecp_sim_get_field(s, big, -3), WAVECP_ERR_ARG, "get_field with a negative length");
    expect(wavecp_sim_node_ids(s, ids, 4), WAVECP_ERR_SIZE, "node_ids with a wrong length");
    expect(wavecp_sim_coords(s, big, n + 1), WAVECP_ERR_SIZE, "coords with a wrong length");
    expect(wavecp_sim_boundary_nodes(s, "nowhere", NULL, 0, &nb), WAVECP_ERR_ARG, "boundary_nodes of an unknown tag");
    expect(wavecp_sim_boundary_nodes(s, "left", NULL, 0, &nb), WAVECP_OK, "boundary_nodes count of `left`");
    expect(wavecp_sim_boundary_nodes(s, "left", ids, 2, &nb), WAVECP_ERR_SIZE, "boundary_nodes into too small an array");
    expect(wavecp_sim_set_boundary_values(s, "right", big, 1), WAVECP_ERR_ARG, "set_boundary_values on a non-external boundary");
    expect(wavecp_sim_set_boundary_values(s, "left", big, nb + 1), WAVECP_ERR_SIZE, "set_boundary_values with a wrong length");
    for (int i = 0; i < nb; i++) big[i] = 0.0;
    big[0] = NAN;
    expect(wavecp_sim_set_boundary_values(s, "left", big, nb), WAVECP_ERR_ARG, "set_boundary_values with a NaN");
    big[0] = 0.0;
    expect(wavecp_sim_set_boundary_values(s, "left", big, nb), WAVECP_OK, "set_boundary_values");
    for (int i = 0; i < 2 * n; i++) big[i] = 0.0;
    big[1] = INFINITY;
    expect(wavecp_sim_set_field(s, big, big + n, n), WAVECP_ERR_ARG, "set_field with an infinity");
    expect(wavecp_sim_load_state(s, junk, sizeof junk), WAVECP_ERR_ARG, "load_state of junk bytes");
    expect(wavecp_sim_load_state(s, NULL, 10), WAVECP_ERR_NULL, "load_state from NULL");
    expect(wavecp_sim_advance(s, 3), WAVECP_OK, "advance(3)");
    int64_t len = -1;
    char small[4] = "abc";
    expect(wavecp_sim_summary_json(s, NULL, 0, NULL), WAVECP_ERR_NULL, "summary_json with length = NULL");
    expect(wavecp_sim_summary_json(s, small, -1, &len), WAVECP_ERR_ARG, "summary_json with a negative capacity");
    expect(wavecp_sim_summary_json(s, small, sizeof small, &len), WAVECP_ERR_ARG, "summary_json into too small a buffer");
    if (len > 4 && small[0] == 'a') {
        printf("ok   %-58s told\n", "summary_json: its length, the buffer untouched");
    } else {
        fprintf(stderr, "FAIL summary_json: length %lld, buffer \"%s\"\n", (long long)len, small);
        failures++;
    }
    expect(wavecp_sim_summary_json(s, NULL, 5, &len), WAVECP_ERR_NULL, "summary_json into NULL with a capacity");

    /* A state of another job is refused. */
    int64_t bytes = 0;
    expect(wavecp_sim_create(other, &t), WAVECP_OK, "create a simulation of another mesh");
    expect(wavecp_sim_state_size(t, &bytes), WAVECP_OK, "state_size of it");
    uint8_t *st = malloc((size_t)bytes);
    expect(wavecp_sim_save_state(t, st, bytes - 1), WAVECP_ERR_SIZE, "save_state into too small a buffer");
    expect(wavecp_sim_save_state(t, st, bytes), WAVECP_OK, "save_state");
    expect(wavecp_sim_load_state(s, st, bytes), WAVECP_ERR_ARG, "load_state of another job's state");
    free(st);

    /* After finish: queries only. */
    expect(wavecp_sim_finish(s), WAVECP_OK, "finish");
    expect(wavecp_sim_finish(s), WAVECP_OK, "finish again");
    expect(wavecp_sim_advance(s, 1), WAVECP_ERR_ORDER, "advance after finish");
    expect(wavecp_sim_write_output(s), WAVECP_ERR_ORDER, "write_output after finish");
    expect(wavecp_sim_set_boundary_values(s, "left", big, nb), WAVECP_ERR_ORDER, "set_boundary_values after finish");
    expect(wavecp_sim_time(s, &x), WAVECP_OK, "time after finish");

    /* After destroy: the handle is dead, and stays dead. */
    wavecp_sim_destroy(s);
    expect(wavecp_sim_advance(s, 1), WAVECP_ERR_HANDLE, "advance after destroy");
    expect(wavecp_sim_time(s, &x), WAVECP_ERR_HANDLE, "time after destroy");
    expect(wavecp_sim_summary_json(s, NULL, 0, &len), WAVECP_ERR_HANDLE, "summary_json after destroy");
    wavecp_sim_destroy(s);
    printf("ok   %-58s survived\n", "destroy twice");
    wavecp_sim_destroy(NULL);
    printf("ok   %-58s survived\n", "destroy(NULL)");
    expect(wavecp_sim_time(t, &x), WAVECP_OK, "the other simulation is still alive");
    wavecp_sim_destroy(t);

    if (strcmp(wavecp_status_name(999), "unknown status") != 0) failures++;
    printf("%s: %d failures\n", failures ? "FAILED" : "passed", failures);
    return failures ? 1 : 0;
}
