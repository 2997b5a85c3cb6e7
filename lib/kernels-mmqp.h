/*
 * kernels-mmqp.h: the packed int8 tiles (Q8_0, Q4_0, Q4_K, Q5_K and Q6_K;
 * quant-internal.h, DESIGN 8 and 9) and their helpers, written once and
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
 * and gets QUANT_MMQP_FN(mmqp_<type>) for the table, with
 * QUANT_MMQP_FN(prefetch) for its own decode kernels.  Both instances
 * compute the same exact integer sums, then the same float operations, so
 * their outputs are the same bits.  Without VNNI, bytes multiply in pairs
 * into 16 bits, which each tile widens before they could saturate (see
 * each); with VNNI every piece of 4 bytes adds straight into 32 bits, and
 * a K-quant sub-block's sum is then multiplied by its scale (vpmulld)
 * where the AVX2 tile multiplies its 16-bit halves (vpmaddwd).
 */

/* Tile loops have constant trip counts once inlined; unrolled, the
 * accumulators live in registers instead of on the stack (2x faster). */
#define QUANT_UNROLL _Pragma("GCC unroll 8")
/* Pins v in a register at this point of a sum: without it the compiler
 * may reassociate the integer sums into a tree that computes every
 * product first and spills them to the stack (the packed Q4_0 tile ran
 * 107 instead of 127 GOP/s on one Zen 3 core). */
#define QUANT_KEEP(v)	__asm__("" : "+x"(v))

/* Decode (one input) prefetches this many bytes ahead of the block it
 * reads: the hardware prefetcher alone left TinyLlama Q4_0/Q8_0 decode
 * 12-15% slower (mean of 6-8 alternating runs, 2 threads).  So does the
 * first tile of a few batched inputs on a packed group (mmqp's stream):
 * without it 2-8 sequences decoded 6-15% slower (TinyLlama Q8_0, Q4_0,
 * Q4_K_M, Mixtral shape; steps alternating between the two, 2 threads),
 * while prefetching in every tile cost prefill 5-9%. */
#define QUANT_DECODE_AHEAD 2048

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
#define QUANT_MMQP_NC	4

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
    float *y, int64_t ldy, int64_t n, const int nc, int stream, const int q4)
{
	const size_t bs = q4 ? sizeof(struct block_q4_0x8) :
	    sizeof(struct block_q8_0x8);
	const __m256i m4 = _mm256_set1_epi8(0xf);
#if !QUANT_MMQP_VNNI
	const __m256i ones = _mm256_set1_epi16(1);
#endif
	__m256 acc[QUANT_MMQP_NC];
	__m256i isum[QUANT_MMQP_NC];

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

/* v's 16-bit lanes shifted left by sh (right by -sh), -3 <= sh <= 4: the
 * packed K-quant tiles move a quant's high bits into place with it (the
 * immediates must be literals for clang). */
QUANT_MMQP_KERNEL __m256i
QUANT_MMQP_FN(shift16)(__m256i v, const int sh)
{
	return sh == 4 ? _mm256_slli_epi16(v, 4) :
	    sh == 3 ? _mm256_slli_epi16(v, 3) :
	    sh == 2 ? _mm256_slli_epi16(v, 2) :
	    sh == 1 ? _mm256_slli_epi16(v, 1) :
	    sh == 0 ? v :
	    sh == -1 ? _mm256_srli_epi16(v, 1) :
	    sh == -2 ? _mm256_srli_epi16(v, 2) :
	    _mm256_srli_epi16(v, 3);
}

/*
 * Packed Q4_K and Q5_K (five; quant-internal.h, DESIGN 9), 8 rows by nc
 * inputs, lane r of every vector for row r.  Three 32-byte loads hold the 12
 * scale bytes of every row, 4 at a time, and the shifts of
 * quant_scale_min_k4() on them unpack all 8 rows' scales and mins at once,
 * sub-block j's in bytes 8j + r of (j < 4 ? sl : sh) and of (j < 4 ? ml :
 * mh).  A vpshufb then spreads a sub-block's scales over the 16-bit halves
 * of each row's lane (for vpmaddwd), or pairs two sub-blocks' mins in those
 * halves.  Per sub-block of 32, 8 loads give each row's nibbles 4 at a time;
 * their products with 4 broadcast activation bytes add up in 16 bits (at
 * most 8 * 2 * 15 * 127 = 30480: vpmaddubsw's pairs, 3810, cannot saturate
 * either), then vpmaddwd by the scales widens to 32 bits.  The mins' sum,
 * m_j times x's sums per 32 (at most 4064), is vpmaddwd of the min pairs by
 * the sum pairs.  Both sums are exact, so each lane computes
 * quant_mmqp_k45_row()'s integers and then the same two fused multiply-adds.
 * Q5_K's quants take their fifth bit from the qh bytes of the same 4 places
 * (bit j for sub-block j, shifted to bit 4), so they reach 31: pairs of at
 * most 7874, of which 4 add up in 16 bits (31496) before vpmaddwd takes
 * them, twice per sub-block.
 */
QUANT_MMQP_KERNEL void
QUANT_MMQP_FN(mmqp_k45_t)(const char *g, int nr, const struct quant_q8x *x,
    float *y, int64_t ldy, int64_t n, const int nc, int stream,
    const int five)
{
	const size_t gbs = five ? sizeof(struct block_q5_Kx8) :
	    sizeof(struct block_q4_Kx8);
	const __m256i m4 = _mm256_set1_epi8(0xf), m6 = _mm256_set1_epi8(63);
	const __m256i m30 = _mm256_set1_epi8(0x30);
	const __m256i b4 = _mm256_set1_epi8(0x10);
	/* lane r: byte r (dup[0]) or 8 + r (dup[1]) of its 128-bit half in
	 * both 16-bit halves; pair: byte r, then byte 8 + r */
	const __m256i dup[2] = {
		_mm256_setr_epi8(0, -1, 0, -1, 1, -1, 1, -1, 2, -1, 2, -1, 3,
		    -1, 3, -1, 4, -1, 4, -1, 5, -1, 5, -1, 6, -1, 6, -1, 7, -1,
		    7, -1),
		_mm256_setr_epi8(8, -1, 8, -1, 9, -1, 9, -1, 10, -1, 10, -1,
		    11, -1, 11, -1, 12, -1, 12, -1, 13, -1, 13, -1, 14, -1, 14,
		    -1, 15, -1, 15, -1),
	};
	const __m256i pair = _mm256_setr_epi8(0, -1, 8, -1, 1, -1, 9, -1, 2,
	    -1, 10, -1, 3, -1, 11, -1, 4, -1, 12, -1, 5, -1, 13, -1, 6, -1, 14,
	    -1, 7, -1, 15, -1);
	__m256 acc[QUANT_MMQP_NC];
	__m256i isum[QUANT_MMQP_NC], p[QUANT_MMQP_NC];

	QUANT_UNROLL
	for (int c = 0; c < nc; c++)
		acc[c] = _mm256_setzero_ps();
	for (int64_t i = 0; i < n / QK_K; i++, g += gbs) {
		const struct block_q4_Kx8 *b = (const void *)g;
		const uint8_t *qsb = five ? ((const struct block_q5_Kx8 *)
		    (const void *)g)->qs : b->qs;
		const uint8_t *qh = five ? ((const struct block_q5_Kx8 *)
		    (const void *)g)->qh : NULL;
		__m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)
		    b->d));
		__m256 mw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)
		    b->dmin));
		__m256i v0 = _mm256_loadu_si256((const __m256i *)b->scales);
		__m256i v1 = _mm256_loadu_si256((const __m256i *)(b->scales +
		    32));
		__m256i v2 = _mm256_loadu_si256((const __m256i *)(b->scales +
		    64));
		__m256i sl = _mm256_and_si256(v0, m6);
		__m256i sh = _mm256_or_si256(_mm256_and_si256(v2, m4),
		    _mm256_and_si256(_mm256_srli_epi16(v0, 2), m30));
		__m256i ml = _mm256_and_si256(v1, m6);
		__m256i mh = _mm256_or_si256(_mm256_and_si256(
		    _mm256_srli_epi16(v2, 4), m4), _mm256_and_si256(
		    _mm256_srli_epi16(v1, 2), m30));
		__m256i mp[4];

		if (stream)
			QUANT_MMQP_FN(prefetch)(g, gbs);
		mp[0] = _mm256_shuffle_epi8(_mm256_permute2x128_si256(ml, ml,
		    0x00), pair);
		mp[1] = _mm256_shuffle_epi8(_mm256_permute2x128_si256(ml, ml,
		    0x11), pair);
		mp[2] = _mm256_shuffle_epi8(_mm256_permute2x128_si256(mh, mh,
		    0x00), pair);
		mp[3] = _mm256_shuffle_epi8(_mm256_permute2x128_si256(mh, mh,
		    0x11), pair);
		/* the mins first, as the definition has them */
		QUANT_UNROLL
		for (int c = 0; c < nc; c++) {
			__m256i sv = _mm256_loadu_si256((const __m256i *)
			    (x[c].s + 8 * i)), ms;

			sv = _mm256_packs_epi32(sv, sv);
			ms = _mm256_madd_epi16(mp[0],
			    _mm256_permutevar8x32_epi32(sv,
			    _mm256_set1_epi32(0)));
			ms = _mm256_add_epi32(ms, _mm256_madd_epi16(mp[1],
			    _mm256_permutevar8x32_epi32(sv,
			    _mm256_set1_epi32(1))));
			ms = _mm256_add_epi32(ms, _mm256_madd_epi16(mp[2],
			    _mm256_permutevar8x32_epi32(sv,
			    _mm256_set1_epi32(4))));
			ms = _mm256_add_epi32(ms, _mm256_madd_epi16(mp[3],
			    _mm256_permutevar8x32_epi32(sv,
			    _mm256_set1_epi32(5))));
			acc[c] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(ms),
			    _mm256_mul_ps(mw, _mm256_set1_ps(x[c].d[i])),
			    acc[c]);
			isum[c] = _mm256_setzero_si256();
		}
		QUANT_UNROLL
		for (int j = 0; j < 8; j++) {
			const uint8_t *qs = qsb + 32 * 8 * (j / 2);
			__m256i h = j < 4 ? sl : sh;
			/* the immediate must be a literal for clang */
			__m256i s = j % 4 < 2 ?
			    _mm256_permute2x128_si256(h, h, 0x00) :
			    _mm256_permute2x128_si256(h, h, 0x11);

			s = _mm256_shuffle_epi8(s, dup[j % 2]);
			QUANT_UNROLL
			for (int k = 0; k < 8; k++) {
				__m256i v = _mm256_loadu_si256((const __m256i *)
				    (qs + 32 * k));

				v = j % 2 ? _mm256_and_si256(_mm256_srli_epi16(v,
				    4), m4) : _mm256_and_si256(v, m4);
				if (five)	/* bit j of qh to bit 4 */
					v = _mm256_or_si256(v, _mm256_and_si256(
					    QUANT_MMQP_FN(shift16)(_mm256_loadu_si256(
					    (const __m256i *)(qh + 32 * k)), 4 - j),
					    b4));
				QUANT_UNROLL
				for (int c = 0; c < nc; c++) {
					__m256i xb = QUANT_MMQP_FN(bcast4)(x[c].q +
					    QK_K * i + 32 * j + 4 * k);
#if QUANT_MMQP_VNNI
					p[c] = _mm256_dpbusd_epi32(k ? p[c] :
					    _mm256_setzero_si256(), v, xb);
#else
					__m256i t = _mm256_maddubs_epi16(v, xb);

					p[c] = k % (five ? 4 : 8) ?
					    _mm256_add_epi16(p[c], t) : t;
#endif
					QUANT_KEEP(p[c]);
				}
#if QUANT_MMQP_VNNI
				if (k != 7)
					continue;
				/* the scale, zero-extended, times the
				 * sub-block's 32-bit sum */
				QUANT_UNROLL
				for (int c = 0; c < nc; c++)
					isum[c] = _mm256_add_epi32(isum[c],
					    _mm256_mullo_epi32(p[c],
					    _mm256_srli_epi32(s, 16)));
#else
				if (k % (five ? 4 : 8) != (five ? 3 : 7))
					continue;
				QUANT_UNROLL
				for (int c = 0; c < nc; c++)
					isum[c] = _mm256_add_epi32(isum[c],
					    _mm256_madd_epi16(p[c], s));
#endif
			}
		}
		QUANT_MMQP_FN(mmqp_fma)(acc, isum, dw, x, i, nc);
	}
	QUANT_MMQP_FN(mmqp_store)(acc, nr, nc, y, ldy);
}

/*
 * Packed Q6_K (quant-internal.h, DESIGN 9), 8 rows by nc inputs, lane r for
 * row r.  Two pieces at a time, the quants less 32 are assembled from ql and
 * qh, 4 of each row per vector, and used at once by every input, in
 * registers.  (Assembling all 64 vectors first, as an earlier version did,
 * kept them on the stack: 8 inputs on one Zen 3 core, in cache, 83-99
 * against 117-131 GOP/s.)  Each input's bytes offset by 128 come with it
 * (x.u, made once per product; made here per super-block they cost 10-20% of
 * the tile).  vpmaddubsw takes x + 128 (unsigned, at most 255) times q - 32
 * (signed, -32..31): pairs of at most 2 * 255 * 32 = 16320, two vpmaddubsw
 * added in 16 bits at most 32640, then vpmaddwd by the sub-block's int8
 * scale (spread over the lane's 16-bit halves, sign extended) to 32 bits.
 * Taking off the row's bias, 128 sum_j sc_j sum(q - 32), leaves
 * quant_mmqp_q6_K_row()'s exact isum (the lane's sum before that stays below
 * 16 * 128 * 16 * 255 * 32 < 2^28).
 */
QUANT_MMQP_KERNEL void
QUANT_MMQP_FN(mmqp_q6_K_t)(const char *g, int nr, const struct quant_q8x *x,
    float *y, int64_t ldy, int64_t n, const int nc, int stream,
    const int unused)
{
	const __m256i m4 = _mm256_set1_epi8(0xf), m30 = _mm256_set1_epi8(0x30);
	const __m256i e32 = _mm256_set1_epi8(32);
	/* lane r: byte r (hi[0]) or 8 + r (hi[1]) of its 128-bit half in the
	 * high byte of both 16-bit halves */
	const __m256i hi[2] = {
		_mm256_setr_epi8(-1, 0, -1, 0, -1, 1, -1, 1, -1, 2, -1, 2, -1,
		    3, -1, 3, -1, 4, -1, 4, -1, 5, -1, 5, -1, 6, -1, 6, -1, 7,
		    -1, 7),
		_mm256_setr_epi8(-1, 8, -1, 8, -1, 9, -1, 9, -1, 10, -1, 10,
		    -1, 11, -1, 11, -1, 12, -1, 12, -1, 13, -1, 13, -1, 14, -1,
		    14, -1, 15, -1, 15),
	};
	const struct block_q6_Kx8 *b = (const void *)g;
	__m256i sc[16], is[QUANT_MMQP_NC];
#if QUANT_MMQP_VNNI
	__m256i t[QUANT_MMQP_NC];
#endif

	(void)unused;
	__m256 acc[QUANT_MMQP_NC];

	QUANT_UNROLL
	for (int c = 0; c < nc; c++)
		acc[c] = _mm256_setzero_ps();
	for (int64_t i = 0; i < n / QK_K; i++, b++) {
		__m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)
		    b->d));
		__m256i bias = _mm256_loadu_si256((const __m256i *)b->bias);

		if (stream)
			QUANT_MMQP_FN(prefetch)(b, sizeof *b);
		QUANT_UNROLL
		for (int j = 0; j < 16; j += 2) {
			__m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128(
			    (const __m128i *)(b->scales + 8 * j)));

			sc[j] = _mm256_srai_epi16(_mm256_shuffle_epi8(v, hi[0]),
			    8);
			sc[j + 1] = _mm256_srai_epi16(_mm256_shuffle_epi8(v,
			    hi[1]), 8);
		}
		QUANT_UNROLL
		for (int c = 0; c < nc; c++)
			is[c] = _mm256_setzero_si256();
		/* quarter Q of half h: elements 128h + 32Q + 4k + e, sub-block
		 * 8h + 2Q + k / 4; its quants two pieces at a time */
		for (int h = 0; h < 2; h++)
			QUANT_UNROLL
			for (int qq = 0; qq < 4; qq++)
				QUANT_UNROLL
				for (int k = 0; k < 8; k += 2) {
					__m256i q[2];

					QUANT_UNROLL
					for (int e = 0; e < 2; e++) {
						__m256i l = _mm256_loadu_si256(
						    (const __m256i *)(b->ql + 32 *
						    (16 * h + 8 * (qq % 2) + k +
						    e)));
						__m256i hb = _mm256_loadu_si256(
						    (const __m256i *)(b->qh + 32 *
						    (8 * h + k + e)));

						l = qq < 2 ? _mm256_and_si256(l,
						    m4) : _mm256_and_si256(
						    _mm256_srli_epi16(l, 4), m4);
						/* bits 2qq, 2qq + 1 to 4, 5 */
						q[e] = _mm256_sub_epi8(
						    _mm256_or_si256(l,
						    _mm256_and_si256(
						    QUANT_MMQP_FN(shift16)(hb, 4 -
						    2 * qq), m30)), e32);
					}
					QUANT_UNROLL
					for (int c = 0; c < nc; c++) {
						const int8_t *xe = (const int8_t *)
						    x[c].u + QK_K * i + 128 * h +
						    32 * qq + 4 * k;
						__m256i x0 = QUANT_MMQP_FN(bcast4)(
						    xe), x1 = QUANT_MMQP_FN(
						    bcast4)(xe + 4);
#if QUANT_MMQP_VNNI
						/* a sub-block's 16 in 32 bits,
						 * times its scale (sign
						 * extended) */
						t[c] = _mm256_dpbusd_epi32(
						    _mm256_dpbusd_epi32(k % 4 ?
						    t[c] : _mm256_setzero_si256(),
						    x0, q[0]), x1, q[1]);
						QUANT_KEEP(t[c]);
						if (k % 4 == 0)
							continue;
						is[c] = _mm256_add_epi32(is[c],
						    _mm256_mullo_epi32(t[c],
						    _mm256_srai_epi32(sc[8 * h +
						    2 * qq + k / 4], 16)));
#else
						__m256i t = _mm256_add_epi16(
						    _mm256_maddubs_epi16(x0,
						    q[0]), _mm256_maddubs_epi16(
						    x1, q[1]));

						is[c] = _mm256_add_epi32(is[c],
						    _mm256_madd_epi16(t, sc[8 *
						    h + 2 * qq + k / 4]));
#endif
						QUANT_KEEP(is[c]);
					}
				}
		QUANT_UNROLL
		for (int c = 0; c < nc; c++)
			acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(
			    _mm256_sub_epi32(is[c], bias)), _mm256_mul_ps(dw,
			    _mm256_set1_ps(x[c].d[i])), acc[c]);
	}
	QUANT_MMQP_FN(mmqp_store)(acc, nr, nc, y, ldy);
}

/* The table's entries: the tile for the nc (1-4) inputs given. */
#define QUANT_MMQP_ENTRY(type, tile, var)				\
QUANT_MMQP_ENTRY_ATTR void						\
QUANT_MMQP_FN(mmqp_##type)(const void *g, int nr,			\
    const struct quant_q8x *x, int nc, float *y, int64_t ldy, int64_t n,	\
    int stream)								\
{									\
	switch (nc) {							\
	case 1: QUANT_MMQP_FN(tile)(g, nr, x, y, ldy, n, 1, stream, var); \
		break;							\
	case 2: QUANT_MMQP_FN(tile)(g, nr, x, y, ldy, n, 2, stream, var); \
		break;							\
	case 3: QUANT_MMQP_FN(tile)(g, nr, x, y, ldy, n, 3, stream, var); \
		break;							\
	case 4: QUANT_MMQP_FN(tile)(g, nr, x, y, ldy, n, 4, stream, var); \
		break;							\
	}								\
}

QUANT_MMQP_ENTRY(q8_0, mmqp_t, 0)
QUANT_MMQP_ENTRY(q4_0, mmqp_t, 1)
QUANT_MMQP_ENTRY(q4_K, mmqp_k45_t, 0)
QUANT_MMQP_ENTRY(q5_K, mmqp_k45_t, 1)
QUANT_MMQP_ENTRY(q6_K, mmqp_q6_K_t, 0)
#undef QUANT_MMQP_ENTRY
