/*
 * kernels-mmqp.h: the packed Q8_0 and Q4_0 tile (quant-internal.h,
 * DESIGN 8) and the helpers every packed tile shares, written once and
 * included twice: by kernels-avx2.c for AVX2, and by kernels-avx512.c for
 * CPUs with AVX-512 VNNI, whose vpdpbusd multiplies 4 unsigned by 4 signed
 * bytes and adds them to a 32-bit lane in one instruction.  The includer
 * defines:
 *
 *	QUANT_MMQP_KERNEL	the attributes of the inline functions
 *	QUANT_MMQP_ENTRY_ATTR	the attributes of the table's entries
 *	QUANT_MMQP_FN(name)	name with the instance's prefix
 *	QUANT_MMQP_VNNI		1 to sum with vpdpbusd, 0 with vpmaddubsw
 *				and vpmaddwd
 *
 * and gets QUANT_MMQP_FN(mmqp_q8_0) and QUANT_MMQP_FN(mmqp_q4_0) for the
 * table, with QUANT_MMQP_FN(prefetch), (mmqp_store), (mmqp_fma) and
 * (bcast4) for its own kernels.  Both instances compute the same exact
 * integer sums (vpdpbusd's four products are vpmaddubsw's two pairs, and
 * neither saturates here: see below), then the same float operations, so
 * their outputs are the same bits.
 */

/* Tile loops have constant trip counts once inlined; unrolled, the
 * accumulators live in registers instead of on the stack (2x faster). */
#ifndef QUANT_UNROLL
#define QUANT_UNROLL _Pragma("GCC unroll 8")
/* Pins v in a register at this point of a sum: without it the compiler
 * may reassociate the integer sums into a tree that computes every
 * product first and spills them to the stack (the packed Q4_0 tile ran
 * 107 instead of 127 GOP/s on one Zen 3 core). */
#define QUANT_KEEP(v)	__asm__("" : "+x"(v))
#endif

/* Decode (one input) prefetches this many bytes ahead of the block it
 * reads: the hardware prefetcher alone left TinyLlama Q4_0/Q8_0 decode
 * 12-15% slower (mean of 6-8 alternating runs, 2 threads).  So does the
 * first tile of a few batched inputs on a packed group (mmqp's stream):
 * without it 2-8 sequences decoded 6-15% slower (TinyLlama Q8_0, Q4_0,
 * Q4_K_M, Mixtral shape; steps alternating between the two, 2 threads),
 * while prefetching in every tile cost prefill 5-9%. */
#ifndef QUANT_DECODE_AHEAD
#define QUANT_DECODE_AHEAD 2048
#endif

QUANT_MMQP_KERNEL void
QUANT_MMQP_FN(prefetch)(const void *block, size_t bs)
{
	for (size_t o = 0; o < bs; o += 64)
		_mm_prefetch((const char *)block + QUANT_DECODE_AHEAD + o,
		    _MM_HINT_T0);
}

/*
 * Packed Q8_0 and Q4_0: 8 rows by nc inputs.  Lane r of every vector below
 * belongs to row r.  Per block, a piece of 4 activation bytes is broadcast
 * to all lanes and multiplied with the 4 quants each row has at that
 * place; the lanes' integer sums are then scaled with one multiply-add,
 * exactly as quant_mmqp_ref() does per row.  Without VNNI, Q4_0 keeps its
 * sums in 16 bits until the block ends (8 products of pairs, at most 8 * 2
 * * 15 * 127 = 30480); Q8_0's pairs reach 2 * 128 * 127, so they widen to
 * 32 bits at each piece.  With VNNI every piece adds to 32 bits at once.
 */
#ifndef QUANT_MMQP_NC
#define QUANT_MMQP_NC	4
#endif

/* The packed tiles' outputs: lane r of acc[c] to y[c * ldy + r], r < nr. */
QUANT_MMQP_KERNEL void
QUANT_MMQP_FN(mmqp_store)(const __m256 *acc, int nr, int nc, float *y,
    int64_t ldy)
{
	QUANT_UNROLL
	for (int c = 0; c < nc; c++) {
		float o[QUANT_PACK_ROWS];

		if (nr == QUANT_PACK_ROWS) {
			_mm256_storeu_ps(y + c * ldy, acc[c]);
			continue;
		}
		_mm256_storeu_ps(o, acc[c]);
		memcpy(y + c * ldy, o, (size_t)nr * sizeof(float));
	}
}

/* acc[c] += isum[c] * (dw * x[c].d[i]) for the nc inputs: one block's
 * (super-block's) exact sums into the 8 rows' outputs. */
QUANT_MMQP_KERNEL void
QUANT_MMQP_FN(mmqp_fma)(__m256 *acc, const __m256i *isum, __m256 dw,
    const struct quant_q8x *x, int64_t i, int nc)
{
	QUANT_UNROLL
	for (int c = 0; c < nc; c++)
		acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[c]),
		    _mm256_mul_ps(dw, _mm256_set1_ps(x[c].d[i])), acc[c]);
}

QUANT_MMQP_KERNEL __m256i
QUANT_MMQP_FN(bcast4)(const int8_t *p)
{
	int32_t v;

	memcpy(&v, p, 4);
	return _mm256_set1_epi32(v);
}

QUANT_MMQP_KERNEL void
QUANT_MMQP_FN(mmqp_t)(const char *g, int nr, const struct quant_q8x *x,
    float *y, int64_t ldy, int64_t n, const int nc, const int q4, int stream)
{
	const size_t bs = q4 ? sizeof(struct block_q4_0x8) :
	    sizeof(struct block_q8_0x8);
	const __m256i ones = _mm256_set1_epi16(1), m4 = _mm256_set1_epi8(0xf);
	__m256 acc[QUANT_MMQP_NC];
	__m256i isum[QUANT_MMQP_NC];

	(void)ones;
	QUANT_UNROLL
	for (int c = 0; c < nc; c++)
		acc[c] = _mm256_setzero_ps();
	for (int64_t i = 0; i < n / QK8_0; i++, g += bs) {
		const uint8_t *qs = (const uint8_t *)g + 2 * QUANT_PACK_ROWS;
		__m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)g));

		if (stream)
			QUANT_MMQP_FN(prefetch)(g, bs);

		QUANT_UNROLL
		for (int c = 0; c < nc; c++)
			isum[c] = _mm256_setzero_si256();
		if (q4) {
			QUANT_UNROLL
			for (int k = 0; k < 4; k++) {
				__m256i v = _mm256_loadu_si256((const __m256i *)
				    (qs + 32 * k));
				__m256i lo = _mm256_and_si256(v, m4);
				__m256i hi = _mm256_and_si256(
				    _mm256_srli_epi16(v, 4), m4);

				QUANT_UNROLL
				for (int c = 0; c < nc; c++) {
					const int8_t *xq = x[c].q + QK8_0 * i +
					    4 * k;
#if QUANT_MMQP_VNNI
					isum[c] = _mm256_dpbusd_epi32(
					    _mm256_dpbusd_epi32(isum[c], lo,
					    QUANT_MMQP_FN(bcast4)(xq)), hi,
					    QUANT_MMQP_FN(bcast4)(xq + 16));
#else
					isum[c] = _mm256_add_epi16(isum[c],
					    _mm256_add_epi16(
					    _mm256_maddubs_epi16(lo,
					    QUANT_MMQP_FN(bcast4)(xq)),
					    _mm256_maddubs_epi16(hi,
					    QUANT_MMQP_FN(bcast4)(xq + 16))));
#endif
					QUANT_KEEP(isum[c]);
				}
			}
			QUANT_UNROLL
			for (int c = 0; c < nc; c++)
#if QUANT_MMQP_VNNI
				isum[c] = _mm256_sub_epi32(isum[c],
				    _mm256_set1_epi32(8 * x[c].s[i]));
#else
				isum[c] = _mm256_sub_epi32(_mm256_madd_epi16(
				    isum[c], ones), _mm256_set1_epi32(8 *
				    x[c].s[i]));
#endif
		} else {
			QUANT_UNROLL
			for (int k = 0; k < 8; k++) {
				__m256i v = _mm256_loadu_si256((const __m256i *)
				    (qs + 32 * k));
				__m256i u = _mm256_abs_epi8(v);

				QUANT_UNROLL
				for (int c = 0; c < nc; c++) {
					__m256i s = _mm256_sign_epi8(
					    QUANT_MMQP_FN(bcast4)(x[c].q +
					    QK8_0 * i + 4 * k), v);

#if QUANT_MMQP_VNNI
					isum[c] = _mm256_dpbusd_epi32(isum[c],
					    u, s);
#else
					isum[c] = _mm256_add_epi32(isum[c],
					    _mm256_madd_epi16(
					    _mm256_maddubs_epi16(u, s), ones));
#endif
					QUANT_KEEP(isum[c]);
				}
			}
		}
		QUANT_MMQP_FN(mmqp_fma)(acc, isum, dw, x, i, nc);
	}
	QUANT_MMQP_FN(mmqp_store)(acc, nr, nc, y, ldy);
}

#define QUANT_MMQP_ENTRY(type, q4)					\
QUANT_MMQP_ENTRY_ATTR void						\
QUANT_MMQP_FN(mmqp_##type)(const void *g, int nr,			\
    const struct quant_q8x *x, int nc, float *y, int64_t ldy, int64_t n,	\
    int stream)								\
{									\
	switch (nc) {							\
	case 1: QUANT_MMQP_FN(mmqp_t)(g, nr, x, y, ldy, n, 1, q4, stream); \
		break;							\
	case 2: QUANT_MMQP_FN(mmqp_t)(g, nr, x, y, ldy, n, 2, q4, stream); \
		break;							\
	case 3: QUANT_MMQP_FN(mmqp_t)(g, nr, x, y, ldy, n, 3, q4, stream); \
		break;							\
	case 4: QUANT_MMQP_FN(mmqp_t)(g, nr, x, y, ldy, n, 4, q4, stream); \
		break;							\
	}								\
}

QUANT_MMQP_ENTRY(q8_0, 0)
QUANT_MMQP_ENTRY(q4_0, 1)
#undef QUANT_MMQP_ENTRY
