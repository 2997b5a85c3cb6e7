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
 *    Those are the float regimes: F32, F16, BF16 weights, and the others
 *    with MISTRAL_ACT_Q8=0.  By default the types with mmq kernels take
 *    int8 activations instead (quant-internal.h): the inputs are
 *    quantized (once per product by quant_act_fill(), or here in groups
 *    of QUANT_MM_SMALL_N) and the mmq kernels compute tiles of rows x
 *    inputs; one input takes tiles of mmq_rows rows, more take
 *    mmq_tile_rows x mmq_tile_cols tiles over blocks of QUANT_MM_CBLOCK
 *    inputs, so a block of inputs and the item's rows stay in L2 while
 *    every row is read once per block; the first tile over some rows in
 *    a block reads them from memory, so it is told to stream (prefetch
 *    ahead, quant-internal.h), and the tiles after it are not.  An
 *    output's arithmetic does not depend on its tile, so this path is
 *    batch-invariant.
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
 * 5. In the float regimes each output is computed by arithmetic that
 *    depends only on its row, its input and the regime (n = 1, n <= 16,
 *    BLAS, whose blocking follows the tile), so batching changes results
 *    within float rounding; with int8 activations it changes nothing.
 */
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "quant-internal.h"

#define QUANT_MM_SMALL_N	16	/* largest n for gemm_small */
#define QUANT_MM_TILE_BYTES	(1024 * 1024)	/* dequantized tile for BLAS */
#define QUANT_MM_TILE_MAX	256	/* rows per tile */
#define QUANT_MM_ALIGN		64	/* scratch alignment */
#define QUANT_MM_STACK_BYTES	(32 * 1024)	/* buffer without scratch */
#define QUANT_MM_CBLOCK		64	/* inputs per block, int8 path */

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

/* The block size of an activation format. */
static int64_t
quant_act_block(int fmt)
{
	return fmt == QUANT_ACT_Q8_K ? QK_K : QK8_0;
}

int
quant_act_fmt(enum ggml_type t, int64_t cols)
{
	const struct quant_kernels *k = quant_kernels();
	int fmt;

	if ((unsigned)t >= GGML_TYPE_COUNT || k->mmq[t] == NULL ||
	    !quant_act_q8())
		return QUANT_ACT_NONE;
	fmt = quant_q8x_is_k(t) ? QUANT_ACT_Q8_K : QUANT_ACT_Q8_0;
	return cols > 0 && cols % quant_act_block(fmt) == 0 ? fmt :
	    QUANT_ACT_NONE;
}

/* Bytes of n inputs quantized to int8: for each, q, d per block and s
 * per 32, and for Q8_K u (quant-internal.h). */
size_t
quant_act_bytes(int fmt, int64_t cols, int64_t n)
{
	if (fmt == QUANT_ACT_NONE || cols <= 0 || n <= 0)
		return 0;
	return (size_t)n * ((size_t)cols * (fmt == QUANT_ACT_Q8_K ? 2 : 1) +
	    (size_t)(cols / quant_act_block(fmt)) * sizeof(float) +
	    (size_t)(cols / QK8_0) * sizeof(int32_t));
}

/* d and s first, so they stay aligned whatever cols is. */
void
quant_act_bind(struct quant_act *a, void *buf, int fmt, int64_t cols,
    int64_t n)
{
	a->fmt = fmt;
	a->cols = cols;
	a->n = n;
	a->d = buf;
	a->s = (int32_t *)(a->d + n * (cols / quant_act_block(fmt)));
	a->q = (int8_t *)(a->s + n * (cols / QK8_0));
	a->u = fmt == QUANT_ACT_Q8_K ? (uint8_t *)(a->q + n * cols) : NULL;
}

void
quant_act_fill(const struct quant_act *a, const float *x, int64_t i0,
    int64_t i1)
{
	const struct quant_kernels *k = quant_kernels();
	int64_t nb = a->cols / quant_act_block(a->fmt), ns = a->cols / QK8_0;

	for (int64_t i = i0; i < i1; i++) {
		int8_t *q = a->q + i * a->cols;

		k->q8x_quantize(x + i * a->cols, a->cols,
		    a->fmt == QUANT_ACT_Q8_K, q, a->d + i * nb, a->s + i * ns);
		if (a->u != NULL)	/* Q8_K: cols is a multiple of 256 */
			for (int64_t e = 0; e < a->cols; e += 8) {
				uint64_t w;	/* q + 128 is q ^ 0x80 */

				memcpy(&w, q + e, 8);
				w ^= UINT64_C(0x8080808080808080);
				memcpy(a->u + i * a->cols + e, &w, 8);
			}
	}
}

/* Input i of a as the kernels take it. */
static struct quant_q8x
quant_act_at(const struct quant_act *a, int64_t i)
{
	struct quant_act v = quant_act_slice(a, i, 1);

	return (struct quant_q8x){ v.q, v.d, v.s, v.u };
}

struct quant_act
quant_act_slice(const struct quant_act *a, int64_t i0, int64_t n)
{
	struct quant_act v = *a;

	v.n = n;
	v.q += i0 * a->cols;
	v.d += i0 * (a->cols / quant_act_block(a->fmt));
	v.s += i0 * (a->cols / QK8_0);
	if (v.u != NULL)
		v.u += i0 * a->cols;
	return v;
}

/* Rows [r0, r1) times inputs [c0, c1) of a, in the tiles of DESIGN 1; a
 * packed matrix (quant.h) in tiles of its groups of 8 rows, whose group
 * holding row r (a multiple of 8) starts at w + r * rs as well, rs then
 * being an eighth of a group's bytes (more than a row's for Q6_K). */
static void
quant_mm_tiles(const struct quant_kernels *k, enum ggml_type t, const char *w,
    size_t rs, int packed, const struct quant_act *a, int64_t c0, int64_t c1,
    float *y, int64_t ldy, int64_t r0, int64_t r1)
{
	struct quant_q8x qx[QUANT_MM_CBLOCK];
	int64_t tr = packed ? QUANT_PACK_ROWS : k->mmq_tile_rows;
	int64_t tc = packed ? k->mmqp_cols : k->mmq_tile_cols;

	if (!packed && c1 - c0 == 1) {
		qx[0] = quant_act_at(a, c0);
		for (int64_t r = r0; r < r1; r += k->mmq_rows)
			k->mmq[t](w + r * rs, rs, (int)(r1 - r < k->mmq_rows ?
			    r1 - r : k->mmq_rows), qx, 1, y + c0 * ldy + r, ldy,
			    a->cols, 1);
		return;
	}
	for (int64_t cb = c0; cb < c1; cb += QUANT_MM_CBLOCK) {
		int64_t ce = c1 - cb < QUANT_MM_CBLOCK ? c1 : cb +
		    QUANT_MM_CBLOCK;

		for (int64_t c = cb; c < ce; c++)
			qx[c - cb] = quant_act_at(a, c);
		for (int64_t r = r0; r < r1; r += tr) {
			int nr = (int)(r1 - r < tr ? r1 - r : tr);

			for (int64_t c = cb; c < ce; c += tc) {
				int nc = (int)(ce - c < tc ? ce - c : tc);

				if (packed)
					k->mmqp[t](w + r * rs, nr, qx + (c - cb),
					    nc, y + c * ldy + r, ldy, a->cols,
					    c == cb);
				else
					k->mmq[t](w + r * rs, rs, nr, qx + (c -
					    cb), nc, y + c * ldy + r, ldy,
					    a->cols, c == cb);
			}
		}
	}
}

void
quant_matmul_act(enum ggml_type t, const void *w, int64_t rows, int64_t cols,
    const struct quant_act *a, float *y, int64_t ldy, int64_t r0, int64_t r1)
{
	const struct quant_kernels *k = quant_kernels();
	size_t rs = quant_row_size(t, cols);

	if ((unsigned)t >= GGML_TYPE_COUNT || k->mmq[t] == NULL ||
	    a->cols != cols || a->n <= 0 || rs == 0 || a->fmt !=
	    (quant_q8x_is_k(t) ? QUANT_ACT_Q8_K : QUANT_ACT_Q8_0) || r0 < 0 ||
	    r1 > rows || r0 >= r1 || (a->n > 1 && ldy < r1))
		return;
	quant_mm_tiles(k, t, w, rs, 0, a, 0, a->n, y, ldy, r0, r1);
}

/* Packed matrices (quant.h): one input walks the groups of 8 rows in
 * order, a single stream through memory; more take tiles of 8 rows. */
void
quant_matmul_packed(enum ggml_type t, const void *p, int64_t rows,
    int64_t cols, const struct quant_act *a, float *y, int64_t ldy,
    int64_t r0, int64_t r1)
{
	const struct quant_kernels *k = quant_kernels();

	if (!quant_packable(t, cols) || k->mmqp[t] == NULL ||
	    a->cols != cols || a->n <= 0 || a->fmt != (quant_q8x_is_k(t) ?
	    QUANT_ACT_Q8_K : QUANT_ACT_Q8_0) || r0 < 0 ||
	    r0 % QUANT_PACK_ROWS != 0 || r1 > rows || r0 >= r1 ||
	    (a->n > 1 && ldy < r1))
		return;
	quant_mm_tiles(k, t, p, quant_pack_size(t, QUANT_PACK_ROWS, cols) /
	    QUANT_PACK_ROWS, 1, a, 0, a->n, y, ldy, r0, r1);
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
	q8x = quant_act_bytes(quant_q8x_is_k(t) ? QUANT_ACT_Q8_K :
	    QUANT_ACT_Q8_0, cols, QUANT_MM_SMALL_N);
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

/* Int8 activations, quantized here in groups of QUANT_MM_SMALL_N inputs
 * into buf (quant_act_bytes() of min(n, QUANT_MM_SMALL_N) inputs). */
static void
quant_mm_q8(const struct quant_kernels *k, enum ggml_type t, int fmt,
    const char *w, size_t rs, int64_t cols, const float *x, int64_t n,
    float *y, int64_t ldy, int64_t r0, int64_t r1, void *buf)
{
	int64_t g = n < QUANT_MM_SMALL_N ? n : QUANT_MM_SMALL_N;
	struct quant_act a;

	for (int64_t i0 = 0; i0 < n; i0 += g) {
		int64_t m = n - i0 < g ? n - i0 : g;

		quant_act_bind(&a, buf, fmt, cols, m);
		quant_act_fill(&a, x + i0 * cols, 0, m);
		quant_mm_tiles(k, t, w, rs, 0, &a, 0, m, y + i0 * ldy, ldy, r0,
		    r1);
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
	int blas, fmt;

	if (tr == NULL || !tr->supported || cols <= 0 || rs == 0 ||
	    n <= 0 || r0 < 0 || r1 > rows || r0 >= r1 || (n > 1 && ldy < r1))
		return;
	if ((fmt = quant_act_fmt(t, cols)) != QUANT_ACT_NONE && (buf =
	    quant_mm_buffer(scratch, quant_act_bytes(fmt, cols, n <
	    QUANT_MM_SMALL_N ? n : QUANT_MM_SMALL_N), stackbuf,
	    &owned)) != NULL) {
		quant_mm_q8(k, t, fmt, w, rs, cols, x, n, y, ldy, r0, r1, buf);
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
