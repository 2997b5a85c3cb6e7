/*
 * bench-kernels.c: throughput of the matrix products per weight type, on
 * each instruction set this CPU has (`make bench`, or run it directly;
 * MISTRAL_BENCH_MB sets the decode matrix size, default 128 MiB).
 *
 * decode: n == 1 mat-vec, reported as GB/s of weights read, with one and
 *	with two threads splitting the rows (the daemon's layout); the
 *	matrix is larger than the caches so this is a memory-bandwidth test.
 *	"int8" is the same with int8 activations (the default for the
 *	types that have them; the other columns turn them off).
 * batch:	n = 4 and 16 (batched decode) and 64 and 256 (prefill), as
 *	GFLOP/s (2 flops per weight per input) on one thread over a matrix
 *	that stays in the last-level cache: float activations, then int8.
 * packed: the same int8 products on the matrix packed as the model
 *	packs it at load (quant.h; Q8_0, Q4_0 and the K-quants), the
 *	kernels decode and batches actually run: decode GB/s with one and
 *	two threads, then the four batches.
 * Not a test: it checks nothing and is not in TESTS.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "quant-internal.h"
#include "quant.h"

struct bench_job {
	enum ggml_type	 t;
	const void	*w;
	int64_t		 rows, cols, n, r0, r1;
	const float	*x;
	float		*y;
	void		*scratch;
	int		 reps;
	const void	*p;		/* packed weights, or NULL */
	struct quant_act a;		/* x as int8, for p */
};

static double
bench_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void *
bench_run_cb(void *arg)
{
	struct bench_job *j = arg;

	for (int i = 0; i < j->reps; i++)
		if (j->p != NULL)
			quant_matmul_packed(j->t, j->p, j->rows, j->cols, &j->a,
			    j->y, j->rows, j->r0, j->r1);
		else
			quant_matmul(j->t, j->w, j->rows, j->cols, j->x, j->n,
			    j->y, j->rows, j->r0, j->r1, j->scratch);
	return NULL;
}

/*
 * Seconds per product with the rows split over nth threads: the best of
 * base->reps timed runs after one to warm up, since other processes on a
 * shared machine only ever make a run slower.
 */
static double
bench_time(const struct bench_job *base, int nth)
{
	struct bench_job jobs[2];
	pthread_t tid[2];
	double best = 1e30;

	for (int i = 0; i < nth; i++) {
		jobs[i] = *base;
		jobs[i].reps = 1;
		/* a packed product starts on a group of 8 rows */
		jobs[i].r0 = base->rows * i / nth / 8 * 8;
		jobs[i].r1 = i + 1 == nth ? base->rows : base->rows * (i + 1) /
		    nth / 8 * 8;
		jobs[i].scratch = malloc(quant_matmul_scratch(base->t,
		    base->cols, jobs[i].r1 - jobs[i].r0) + 1);
	}
	for (int rep = 0; rep <= base->reps; rep++) {
		double t0 = bench_now();

		for (int i = 1; i < nth; i++)
			pthread_create(&tid[i], NULL, bench_run_cb, &jobs[i]);
		bench_run_cb(&jobs[0]);
		for (int i = 1; i < nth; i++)
			pthread_join(tid[i], NULL);
		t0 = bench_now() - t0;
		if (rep > 0 && t0 < best)
			best = t0;
	}
	for (int i = 0; i < nth; i++)
		free(jobs[i].scratch);
	return best;
}

/*
 * Seconds per packed product of base's matrix and its first n inputs,
 * with one thread (*s1) and, if s2 is not NULL, two (*s2); 0 where the
 * type has no packed kernel.
 */
static void
bench_packed(const struct bench_job *base, int64_t n, double *s1, double *s2)
{
	struct bench_job j = *base;
	size_t psize = quant_pack_size(j.t, j.rows, j.cols);
	void *p, *buf;
	int fmt;

	*s1 = 0;
	if (s2 != NULL)
		*s2 = 0;
	quant_set_act_q8(1);
	fmt = quant_act_fmt(j.t, j.cols);
	if (psize == 0 || quant_kernels()->mmqp[j.t] == NULL ||
	    fmt == QUANT_ACT_NONE) {
		quant_set_act_q8(0);
		return;
	}
	p = malloc(psize);
	buf = malloc(quant_act_bytes(fmt, j.cols, n));
	if (p == NULL || buf == NULL) {
		fprintf(stderr, "bench-kernels: out of memory\n");
		exit(1);
	}
	quant_pack(j.t, j.w, j.rows, j.cols, p);
	quant_act_bind(&j.a, buf, fmt, j.cols, n);
	quant_act_fill(&j.a, j.x, 0, n);
	j.p = p;
	j.n = n;
	*s1 = bench_time(&j, 1);
	if (s2 != NULL)
		*s2 = bench_time(&j, 2);
	quant_set_act_q8(0);
	free(p);
	free(buf);
}

/* rows x cols weights of type t: one quantized block of rows repeated. */
static void *
bench_matrix(enum ggml_type t, int64_t rows, int64_t cols)
{
	size_t rs = quant_row_size(t, cols);
	char *w = malloc(rs * rows);
	float *src = malloc(cols * sizeof *src);
	int64_t seed = 16;

	if (w == NULL || src == NULL) {
		fprintf(stderr, "bench-kernels: out of memory\n");
		exit(1);
	}
	for (int64_t r = 0; r < seed && r < rows; r++) {
		for (int64_t c = 0; c < cols; c++)
			src[c] = (float)((r * 7919 + c * 104729) % 2001 - 1000) *
			    1e-3f;
		quant_quantize_row(t, src, w + r * rs, cols);
	}
	for (int64_t r = seed; r < rows; r++)
		memcpy(w + r * rs, w + (r % seed) * rs, rs);
	free(src);
	return w;
}

int
main(void)
{
	static const enum ggml_type types[] = {
		GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_BF16, GGML_TYPE_Q8_0,
		GGML_TYPE_Q4_0, GGML_TYPE_Q4_K, GGML_TYPE_Q5_K, GGML_TYPE_Q6_K,
	};
	static const int64_t batch[] = { 4, 16, 64, 256 };
	const char *mb_env = getenv("MISTRAL_BENCH_MB");
	int64_t mb = mb_env != NULL ? atoll(mb_env) : 128;
	const int64_t cols = 4096;
	float *x = malloc(256 * cols * sizeof *x);

	if (x == NULL || mb < 8)
		return 1;
	for (int64_t i = 0; i < 256 * cols; i++)
		x[i] = (float)(i % 17) * 0.01f - 0.08f;
	quant_set_act_q8(0);
	for (int isa = QUANT_ISA_AVX512; isa >= QUANT_ISA_SCALAR; isa--) {
		if ((int)quant_set_isa(isa) != isa)
			continue;
		printf("%s\n%-6s %-25s %-25s %-12s  GFLOP/s, 1 thread, n =",
		    quant_isa_name(isa), "type", "decode 1 thread",
		    "decode 2 threads", "int8 1 / 2");
		for (size_t b = 0; b < sizeof batch / sizeof batch[0]; b++)
			printf(" %5lld", (long long)batch[b]);
		printf("\n");
		for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
			enum ggml_type t = types[i];
			size_t rs = quant_row_size(t, cols);
			int64_t rows = (int64_t)((mb << 20) / rs);
			struct bench_job job = { .t = t, .cols = cols, .n = 1,
			    .x = x, .reps = 1 };
			size_t bytes;
			double s1, s2, p1, p2, pb[4];

			/* decode: a matrix well beyond the caches */
			if (isa == QUANT_ISA_SCALAR)
				rows /= 8;
			bytes = rs * rows;
			job.rows = rows;
			job.w = bench_matrix(t, rows, cols);
			job.y = malloc(rows * sizeof *job.y);
			job.reps = isa == QUANT_ISA_SCALAR ? 1 : 5;
			s1 = bench_time(&job, 1);
			s2 = bench_time(&job, 2);
			printf("%-6s %6.1f GB/s %7.2f ms    %6.1f GB/s %7.2f ms    ",
			    quant_traits(t)->name, bytes / s1 * 1e-9, s1 * 1e3,
			    bytes / s2 * 1e-9, s2 * 1e3);
			if (quant_kernels()->mmq[t] != NULL) {
				quant_set_act_q8(1);
				s1 = bench_time(&job, 1);
				s2 = bench_time(&job, 2);
				quant_set_act_q8(0);
				printf("%5.1f %5.1f   ", bytes / s1 * 1e-9,
				    bytes / s2 * 1e-9);
			} else {
				printf("%5s %5s   ", "-", "-");
			}
			bench_packed(&job, 1, &p1, &p2);
			free(job.y);
			free((void *)job.w);

			/* batches: a 512-row matrix, cache-resident */
			job.rows = 512;
			job.w = bench_matrix(t, job.rows, cols);
			job.y = malloc(256 * job.rows * sizeof *job.y);
			for (size_t b = 0; b < sizeof batch / sizeof batch[0]; b++) {
				double s;

				job.n = batch[b];
				job.reps = isa == QUANT_ISA_SCALAR ? 1 : 5;
				s = bench_time(&job, 1);
				printf(" %5.1f", 2.0 * job.rows * cols * job.n /
				    s * 1e-9);
			}
			if (quant_kernels()->mmq[t] != NULL) {
				printf("  int8:");
				quant_set_act_q8(1);
				for (size_t b = 0; b < sizeof batch /
				    sizeof batch[0]; b++) {
					double s;

					job.n = batch[b];
					s = bench_time(&job, 1);
					printf(" %5.1f", 2.0 * job.rows * cols *
					    job.n / s * 1e-9);
				}
				quant_set_act_q8(0);
			}
			for (size_t b = 0; b < sizeof batch / sizeof batch[0]; b++)
				bench_packed(&job, batch[b], &pb[b], NULL);
			if (p1 > 0) {
				printf("  packed: %5.1f %5.1f GB/s |", bytes / p1 *
				    1e-9, bytes / p2 * 1e-9);
				for (size_t b = 0; b < 4; b++)
					printf(" %5.1f", 2.0 * job.rows * cols *
					    batch[b] / pb[b] * 1e-9);
			}
			printf("\n");
			fflush(stdout);
			free((void *)job.w);
			free(job.y);
		}
	}
	free(x);
	return 0;
}
