/* An MPI host program that owns MPI: it calls MPI_Init itself, splits MPI_COMM_WORLD into two
 * halves (even and odd ranks) and gives each half its own wavecp simulation of the job, on the
 * half's communicator; beside it every rank runs a serial simulation of the same job in the
 * same process. At the end each rank checks, node by node, that its part of the distributed
 * field and every receiver are bitwise those of the serial run. Each half writes
 * <out_dir>/mpi_<half>.vtkhdf where `wavecp solve` would write its output steps.
 *
 *   mpicc -O2 -Iinclude examples/c/mpi_host.c -Ltarget/release -lwavecp_c \
 *         -Wl,-rpath,$PWD/target/release -o mpi_host
 *   mpirun -np 3 ./mpi_host jobs/square_dirichlet.toml out [key=value ...]
 */
#include <mpi.h>
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
            MPI_Abort(MPI_COMM_WORLD, 2);                                        \
        }                                                                        \
    } while (0)

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (argc < 3) {
        if (rank == 0) fprintf(stderr, "usage: %s JOB OUT_DIR [key=value ...]\n", argv[0]);
        MPI_Finalize();
        return 1;
    }
    const char *job = argv[1], *dir = argv[2];
    const int every = 25; /* the job's output.every */
    int color = rank % 2, hrank, hsize;
    MPI_Comm half;
    MPI_Comm_split(MPI_COMM_WORLD, color, rank, &half);
    MPI_Comm_rank(half, &hrank);
    MPI_Comm_size(half, &hsize);

    char buf[4096];
    wavecp_sim *dist = NULL, *serial = NULL;
    CHECK(wavecp_sim_create_mpi(job, MPI_Comm_c2f(half), &dist));
    CHECK(wavecp_sim_create(job, &serial));
    snprintf(buf, sizeof buf, "output.path=\"%s/mpi_%d.vtkhdf\"", dir, color);
    CHECK(wavecp_sim_set(dist, buf));
    CHECK(wavecp_sim_set(serial, "output.path=\"\""));
    for (int i = 3; i < argc; i++) {
        CHECK(wavecp_sim_set(dist, argv[i]));
        CHECK(wavecp_sim_set(serial, argv[i]));
    }

    int64_t nsteps, n, ns, nrec;
    CHECK(wavecp_sim_num_steps(dist, &nsteps));
    CHECK(wavecp_sim_num_nodes(dist, &n));
    CHECK(wavecp_sim_num_nodes(serial, &ns));
    CHECK(wavecp_sim_write_output(dist));
    for (int64_t k = 0; k < nsteps; k++) {
        CHECK(wavecp_sim_advance(dist, 1));
        CHECK(wavecp_sim_advance(serial, 1));
        if ((k + 1) % every == 0 || k + 1 == nsteps) CHECK(wavecp_sim_write_output(dist));
    }
    CHECK(wavecp_sim_finish(dist));

    double *u = malloc(sizeof(double) * (size_t)n), *us = malloc(sizeof(double) * (size_t)ns);
    int64_t *ids = malloc(sizeof(int64_t) * (size_t)n), *sids = malloc(sizeof(int64_t) * (size_t)ns);
    double *where = malloc(sizeof(double) * (size_t)ns);
    CHECK(wavecp_sim_get_field(dist, u, n));
    CHECK(wavecp_sim_node_ids(dist, ids, n));
    CHECK(wavecp_sim_get_field(serial, us, ns));
    CHECK(wavecp_sim_node_ids(serial, sids, ns));
    for (int64_t i = 0; i < ns; i++) where[sids[i]] = us[i];
    int64_t differ = 0;
    for (int64_t i = 0; i < n; i++)
        if (memcmp(&u[i], &where[ids[i]], sizeof(double)) != 0) differ++;
    CHECK(wavecp_sim_num_receivers(dist, &nrec));
    double *r = malloc(sizeof(double) * (size_t)(nrec + 1)), *rs = malloc(sizeof(double) * (size_t)(nrec + 1));
    CHECK(wavecp_sim_receivers(dist, r, nrec));
    CHECK(wavecp_sim_receivers(serial, rs, nrec));
    if (nrec > 0 && memcmp(r, rs, sizeof(double) * (size_t)nrec) != 0) differ++;

    int64_t owned = n, all_owned = 0, all_differ = 0;
    MPI_Allreduce(&owned, &all_owned, 1, MPI_INT64_T, MPI_SUM, half);
    MPI_Allreduce(&differ, &all_differ, 1, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
    if (hrank == 0)
        printf("half %d: %d ranks, %lld nodes in all (serial %lld), receiver 0 = %.17g\n", color,
               hsize, (long long)all_owned, (long long)ns, nrec > 0 ? r[0] : 0.0);
    if (rank == 0)
        printf("%s: %lld values differ from the serial run\n", all_differ ? "FAILED" : "bitwise equal",
               (long long)all_differ);

    wavecp_sim_destroy(dist);
    wavecp_sim_destroy(serial);
    MPI_Comm_free(&half);
    MPI_Finalize();
    free(u); free(us); free(ids); free(sids); free(where); free(r); free(rs);
    return all_differ ? 4 : 0;
}
