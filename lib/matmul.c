/*
 * matmul.c: products of a weight matrix (any supported type) with a batch
 * of float vectors.  The only file that calls BLAS.
 *
 * DESIGN
 *
 * 1. Three regimes, by the number n of input vectors:
 *    n == 1 (decode): one fused dequantize-and-dot per weight row; the
 *	weights stream from memory once and nothing is written but y.
 *    n <= QUANT_MM_SMALL_N (batched decode): each group of 4 rows is
 *	dequantized once into scratch and multiplied with all n inputs by
 *	the kernel table's gemm_small (register-blocked, rows x inputs).
 *    larger n (prefill): a tile of rows is dequantized into scratch and
 *	handed to cblas_sgemm; F32 weights go to BLAS in place.
 *    With int8 activations on (quant_act_q8(), quant-internal.h), all
 *    three are replaced for the types that have dotq kernels: up to
 *    QUANT_MM_SMALL_N inputs at a time are quantized into scratch, then
 *    each row is dotted with all of them while it is in cache.  Every
 *    output then has the same arithmetic whatever the batch, as in the
 *    float regimes; larger batches re-read the rows once per group of
 *    inputs, which costs little next to their arithmetic.
 *    Measured on a Zen 3 core (AVX2 kernels, OpenBLAS 0.3.21, one
 *    thread): gemm_small beats sgemm up to n = 16-24 and loses from
 *    n = 32 on; sgemm on 1 MiB tiles ran about 1.5x faster than on
 *    256 KiB ones (fewer calls, each repacking x), so tiles are ~1 MiB.
 * 2. Callers split rows across their own threads, so BLAS must not start
 *    threads of its own: openblas_set_num_threads(1) runs once, before
 *    the first BLAS call.  Concurrent single-threaded cblas_sgemm calls
 *    from our pool are safe in OpenBLAS's pthread build.
 * 3. Scratch depends only on the type, the row length and the number of
 *    rows (quant_matmul_scratch()), never on n, so a caller can size it
 *    once per matrix shape; it covers the largest of the three uses plus
 *    slack to align it to 64 bytes.  Without scratch, a small buffer is
 *    on the stack and a large one malloc()ed; if that fails the rows are
 *    done one float dot at a time, slower but correct.
 * 4. BLAS takes int sizes; a product whose sizes do not fit goes through
 *    the gemm_small path instead.
 * 5. Each output is computed by arithmetic that depends only on its row
 *    and input, except on the BLAS path, where sgemm's blocking follows
 *    the tile; so splitting rows differently over threads may change
 *    prefill results within float rounding, never decode results.
 */
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

#include <cblas.h>

#include "quant-internal.h"

#define QUANT_MM_SMALL_N	16	/* largest n for gemm_small */
#define QUANT_MM_TILE_BYTES	(1024 * 1024)	/* dequantized tile for BLAS */
#define QUANT_MM_TILE_MAX	256	/* rows per tile */
#define QUANT_MM_ALIGN		64	/* scratch alignment */
#define QUANT_MM_STACK_BYTES	(32 * 1024)	/* buffer without scratch */

static pthread_once_t quant_mm_once = PTHREAD_ONCE_INIT;

static void
quant_mm_init_once(void)
{
	openblas_set_num_threads(1);
}

/* Rows per dequantized tile: a multiple of 4 near QUANT_MM_TILE_BYTES,
 * at least 4, at most nrows. */
static int64_t
quant_mm_tile_rows(int64_t cols, int64_t nrows)
{
	int64_t tr = QUANT_MM_TILE_BYTES / (cols * (int64_t)sizeof(float));

	if (tr > QUANT_MM_TILE_MAX)
		tr = QUANT_MM_TILE_MAX;
	tr &= ~(int64_t)3;
	if (tr < 4)
		tr = 4;
	return tr < nrows ? tr : nrows;
}

/* Bytes of n inputs quantized to int8 (quant-internal.h): for each, q,
 * and d and s per 32. */
static size_t
quant_mm_q8x_bytes(int64_t cols, int64_t n)
{
	return (size_t)n * ((size_t)cols + (size_t)(cols / QK8_0) *
	    (sizeof(float) + sizeof(int32_t)));
}

size_t
quant_matmul_scratch(enum ggml_type t, int64_t cols, int64_t nrows)
{
	const struct quant_traits *tr = quant_traits(t);
	size_t tile, q8x;

	if (tr == NULL || !tr->supported || t == GGML_TYPE_F32 || cols <= 0 ||
	    nrows <= 0 || cols > INT64_MAX / 4 / QUANT_MM_TILE_MAX)
		return 0;
	tile = (size_t)(quant_mm_tile_rows(cols, nrows) * cols) * sizeof(float);
	q8x = quant_mm_q8x_bytes(cols, QUANT_MM_SMALL_N);
	return (tile > q8x ? tile : q8x) + QUANT_MM_ALIGN;
}

/*
 * A buffer of need bytes, 64-byte aligned: the caller's scratch, else the
 * stack buffer, else malloc() (*owned is then set for free()).  NULL if
 * the allocation fails.
 */
static void *
quant_mm_buffer(void *scratch, size_t need, void *stackbuf, void **owned)
{
	uintptr_t p;

	*owned = NULL;
	if (scratch == NULL && need + QUANT_MM_ALIGN <= QUANT_MM_STACK_BYTES)
		scratch = stackbuf;
	else if (scratch == NULL &&
	    (scratch = *owned = malloc(need + QUANT_MM_ALIGN)) == NULL)
		return NULL;
	p = ((uintptr_t)scratch + QUANT_MM_ALIGN - 1) &
	    ~(uintptr_t)(QUANT_MM_ALIGN - 1);
	return (void *)p;
}

/* Row by row, input by input: needs nothing but the kernels. */
static void
quant_mm_dots(const struct quant_kernels *k, enum ggml_type t, const char *w,
    size_t rs, int64_t cols, const float *x, int64_t n, float *y,
    int64_t ldy, int64_t r0, int64_t r1)
{
	for (int64_t r = r0; r < r1; r++)
		for (int64_t i = 0; i < n; i++)
			y[i * ldy + r] = k->dot[t](w + r * rs, x + i * cols,
			    cols);
}

/* Int8 activations, in groups of QUANT_MM_SMALL_N inputs; buf holds
 * quant_mm_q8x_bytes(cols, min(n, QUANT_MM_SMALL_N)). */
static void
quant_mm_dotq(const struct quant_kernels *k, enum ggml_type t, const char *w,
    size_t rs, int64_t cols, const float *x, int64_t n, float *y,
    int64_t ldy, int64_t r0, int64_t r1, void *buf)
{
	int64_t nb = cols / QK8_0, g = n < QUANT_MM_SMALL_N ? n :
	    QUANT_MM_SMALL_N;
	int kfmt = quant_q8x_is_k(t);
	float *d = buf;
	int32_t *s = (int32_t *)(d + g * nb);
	int8_t *q = (int8_t *)(s + g * nb);
	struct quant_q8x qx[QUANT_MM_SMALL_N];

	for (int64_t i0 = 0; i0 < n; i0 += g) {
		int64_t m = n - i0 < g ? n - i0 : g;

		for (int64_t i = 0; i < m; i++) {
			qx[i] = (struct quant_q8x){ q + i * cols, d + i * nb,
			    s + i * nb };
			quant_q8x_quantize(x + (i0 + i) * cols, cols, kfmt,
			    q + i * cols, d + i * nb, s + i * nb);
		}
		for (int64_t r = r0; r < r1; r++)
			for (int64_t i = 0; i < m; i++)
				y[(i0 + i) * ldy + r] = k->dotq[t](w + r * rs,
				    &qx[i], cols);
	}
}

/* Groups of 4 rows against all n inputs; buf holds 4 rows of floats
 * (unused for F32). */
static void
quant_mm_small(const struct quant_kernels *k, enum ggml_type t, const char *w,
    size_t rs, int64_t cols, const float *x, int64_t n, float *y,
    int64_t ldy, int64_t r0, int64_t r1, float *buf)
{
	for (int64_t r = r0; r < r1; r += 4) {
		int nw = r1 - r < 4 ? (int)(r1 - r) : 4;
		const float *rows;

		if (t == GGML_TYPE_F32) {
			rows = (const float *)(w + r * rs);
		} else {
			k->dequant[t](w + r * rs, buf, nw * cols);
			rows = buf;
		}
		k->gemm_small(rows, cols, nw, x, cols, n, y + r, ldy, cols);
	}
}

/* Tiles of tr rows through cblas_sgemm; sizes were checked to fit int. */
static void
quant_mm_blas(const struct quant_kernels *k, enum ggml_type t, const char *w,
    size_t rs, int64_t cols, const float *x, int64_t n, float *y,
    int64_t ldy, int64_t r0, int64_t r1, float *buf, int64_t tr)
{
	pthread_once(&quant_mm_once, quant_mm_init_once);
	for (int64_t r = r0; r < r1; r += tr) {
		int64_t m = r1 - r < tr ? r1 - r : tr;
		const float *b;

		if (t == GGML_TYPE_F32) {
			b = (const float *)(w + r * rs);
		} else {
			k->dequant[t](w + r * rs, buf, m * cols);
			b = buf;
		}
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n,
		    (int)m, (int)cols, 1.0f, x, (int)cols, b, (int)cols, 0.0f,
		    y + r, (int)ldy);
	}
}

/*
 * Validates its arguments and does nothing when they are inconsistent
 * (unsupported type, partial block, empty or out-of-range rows, ldy too
 * small for n > 1).
 */
void
quant_matmul(enum ggml_type t, const void *w, int64_t rows, int64_t cols,
    const float *x, int64_t n, float *y, int64_t ldy, int64_t r0, int64_t r1,
    void *scratch)
{
	const struct quant_traits *tr = quant_traits(t);
	const struct quant_kernels *k = quant_kernels();
	_Alignas(QUANT_MM_ALIGN) char stackbuf[QUANT_MM_STACK_BYTES];
	size_t rs = quant_row_size(t, cols);
	void *buf = NULL, *owned = NULL;
	int64_t tile = 0;
	int blas;

	if (tr == NULL || !tr->supported || cols <= 0 || rs == 0 ||
	    n <= 0 || r0 < 0 || r1 > rows || r0 >= r1 || (n > 1 && ldy < r1))
		return;
	if (k->dotq[t] != NULL && quant_act_q8() && (buf =
	    quant_mm_buffer(scratch, quant_mm_q8x_bytes(cols, n <
	    QUANT_MM_SMALL_N ? n : QUANT_MM_SMALL_N), stackbuf,
	    &owned)) != NULL) {
		quant_mm_dotq(k, t, w, rs, cols, x, n, y, ldy, r0, r1, buf);
		free(owned);
		return;
	}
	if (n == 1) {
		for (int64_t r = r0; r < r1; r++)
			y[r] = k->dot[t]((const char *)w + r * rs, x, cols);
		return;
	}
	blas = n > QUANT_MM_SMALL_N && n <= INT_MAX && cols <= INT_MAX &&
	    ldy <= INT_MAX;
	tile = blas ? quant_mm_tile_rows(cols, r1 - r0) :
	    (r1 - r0 < 4 ? r1 - r0 : 4);
	if (t != GGML_TYPE_F32) {
		int64_t fit = (QUANT_MM_STACK_BYTES - QUANT_MM_ALIGN) /
		    ((int64_t)sizeof(float) * cols);

		/* without scratch, a BLAS tile too big for the stack buffer
		 * shrinks to it if 4 rows fit there, rather than malloc() */
		if (scratch == NULL && blas && tile > fit && fit >= 4)
			tile = fit;
		buf = quant_mm_buffer(scratch, (size_t)(tile * cols) *
		    sizeof(float), stackbuf, &owned);
		if (buf == NULL) {
			quant_mm_dots(k, t, w, rs, cols, x, n, y, ldy, r0, r1);
			return;
		}
	}
	if (blas)
		quant_mm_blas(k, t, w, rs, cols, x, n, y, ldy, r0, r1, buf,
		    tile);
	else
		quant_mm_small(k, t, w, rs, cols, x, n, y, ldy, r0, r1, buf);
	free(owned);
}
