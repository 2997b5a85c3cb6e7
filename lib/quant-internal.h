/*
 * quant-internal.h: the quantized block layouts and the kernel table shared
 * by quant.c (scalar references, dispatch), kernels-avx2.c,
 * kernels-avx512.c and matmul.c.  No other library file includes it; the
 * tests do, to build blocks by hand and to reach the int8 switch.
 *
 * DESIGN
 *
 * 1. Every block layout is ggml's, byte for byte, since the blocks are read
 *    in place from GGUF files.  Each is defined here once, with a static
 *    assertion on its size; all fields are byte arrays or uint16_t, so the
 *    structs have no padding and any alignment of 2 suffices (GGUF data is
 *    32-byte aligned, and a row of blocks keeps every block 2-aligned).
 * 2. Half-precision fields (d, dmin) are raw IEEE binary16 bits, converted
 *    with quant_f16_to_f32() or the F16C instructions, which agree exactly.
 * 3. Dequantization is exact arithmetic apart from the one final rounding
 *    of Q4_K/Q5_K's "scale * q - min": every product is exact in float
 *    (an 11-bit half mantissa times at most 8 bits of scale times at most
 *    6 of quant fits 24 bits), so a SIMD dequantizer that fuses multiply
 *    and subtract rounds the same way as the scalar one.  That is why
 *    dequantization can be required to be bit-identical on every path.
 * 4. Kernels live in a struct quant_kernels, one per instruction set,
 *    filled once by quant_init(); a kernel table is never modified after
 *    it has been published.
 * 5. The int8 activations (struct quant_q8x, below), the default for the
 *    quantized types, follow llama.cpp's rounding exactly, so products
 *    reproduce its logits.
 * 6. Batch invariance.  With int8 activations an output depends only on
 *    its weight row and its input: the activation is quantized the same
 *    way whatever else is in the batch, and the mmq kernels add each
 *    block's exact integer sum, scaled, into one accumulator per output in
 *    block order, whatever tile the output is computed in.  So a token's
 *    logits are bit-identical whether it is decoded alone, batched with
 *    other sessions or prefilled in a chunk of any size, which is what
 *    lets the daemon promise the same reply under any load.
 * 7. The attention kernels keep the same promise for the float part of a
 *    layer: a score is one head's query dotted with one key, a value
 *    element one head's sum over its keys in position order, whatever
 *    number of heads or keys a call covers, and softmax depends only on
 *    its own row.  forward.c calls them per query over exactly the keys
 *    that query sees, so nothing depends on the rest of the batch.
 * 8. Packed Q8_0 and Q4_0 (quant.h): groups of 8 rows whose quants are
 *    interleaved 4 bytes at a time (struct block_q8_0x8, block_q4_0x8).
 *    One 32-byte load then carries 4 quants of each row, multiplied by
 *    the same 4 activation bytes broadcast to every lane, so the integer
 *    sums of the 8 rows build up in the 8 lanes of one vector with no
 *    horizontal sum, and one conversion and one multiply-add per block
 *    serve 8 rows.  The definition of an output is scalar: the block's
 *    exact integer sum, then acc = fmaf(isum, d_w * d_x, acc) in block
 *    order.  A SIMD lane does exactly that, so the scalar and the AVX2
 *    kernels give the same bits, whatever the batch.  This is what makes
 *    decode of these types fast (fewer instructions per byte: one Zen 3
 *    core, 4096 x 4096, Q4_0 10.4 -> 26.5 GB/s, Q8_0 13.5 -> 17.9) and
 *    batched products 1.4-1.9x faster than the per-row tiles.
 * 9. Packed Q4_K, Q5_K and Q6_K: the same idea per super-block of 256, one
 *    group of 8 rows per super-block column (struct block_q4_Kx8,
 *    block_q5_Kx8, block_q6_Kx8): the 8 rows' d (and dmin) side by side,
 *    their scales byte-interleaved (byte i of row r at 8i + r), and each
 *    array of quants (qs; qh and qs; ql and qh) interleaved 4 bytes at a
 *    time as in DESIGN 8, so a 32-byte load holds 4 bytes of the same
 *    place in every row.  A Q4_K or Q5_K group is exactly 8 rows' bytes
 *    (the 6-bit scales stay packed: one 32-byte load holds 4 scale bytes
 *    of every row, and a few shifts unpack the 8 rows' scales and mins at
 *    once).  A Q6_K group also holds, per row,
 *    bias = 128 sum_j sc_j sum(q - 32 over sub-block j), so a group is
 *    8 x 214 bytes for 8 x 210 (see quant_pack_size()): the kernel
 *    multiplies x + 128 (unsigned) by the signed q - 32 and takes the bias
 *    off, which needs no sums of x per 16.  The definition of an output,
 *    per super-block b in order, with dx = x.d[b] and the row's d, dmin
 *    converted from half:
 *	Q4_K: msum = sum_j m_j s_j		(s: x's sums per 32)
 *	      isum = sum_j sc_j sum(q x over sub-block j of 32)
 *	      (Q5_K likewise, q with its fifth bit from qh)
 *	      acc = fmaf(-(float)msum, dmin * dx, acc)
 *	      acc = fmaf((float)isum, d * dx, acc)
 *	Q6_K: isum = sum_j sc_j sum((q - 32) x over sub-block j of 16)
 *	      acc = fmaf((float)isum, d * dx, acc)
 *    the sums exact in int32 (|isum| < 2^28), quant_mmqp_ref() in quant.c
 *    and a lane of the AVX2 kernel alike.
 */
#ifndef QUANT_INTERNAL_H
#define QUANT_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "quant.h"

#define QK4_0		32	/* elements per Q4_0 block */
#define QK8_0		32	/* elements per Q8_0 block */
#define QK_K		256	/* elements per K-quant super-block */
#define QUANT_K_SCALE_SIZE 12	/* packed 6-bit scales and mins */

/*
 * Q8_0: x = d * q.
 */
struct block_q8_0 {
	uint16_t	 d;		/* f16 scale */
	int8_t		 qs[QK8_0];
};
_Static_assert(sizeof(struct block_q8_0) == 34, "block_q8_0 size");

/*
 * Q4_0: x = d * (q - 8); element j (j < 16) is the low nibble of qs[j],
 * element j + 16 the high nibble of qs[j].
 */
struct block_q4_0 {
	uint16_t	 d;		/* f16 scale */
	uint8_t		 qs[QK4_0 / 2];
};
_Static_assert(sizeof(struct block_q4_0) == 18, "block_q4_0 size");

/*
 * Q4_K: 8 sub-blocks of 32; x = d * sc[j] * q - dmin * m[j] with 6-bit
 * sc and m packed in scales[12] (see quant_scale_min_k4()).  The 256
 * elements are four chunks of 64: chunk c reads qs[32c .. 32c+31], low
 * nibbles for sub-block 2c, high nibbles for sub-block 2c + 1.
 */
struct block_q4_K {
	uint16_t	 d;		/* f16 scale of the scales */
	uint16_t	 dmin;		/* f16 scale of the mins */
	uint8_t		 scales[QUANT_K_SCALE_SIZE];
	uint8_t		 qs[QK_K / 2];
};
_Static_assert(sizeof(struct block_q4_K) == 144, "block_q4_K size");

/*
 * Q5_K: as Q4_K with a fifth bit: in chunk c, element l of sub-block 2c
 * adds 16 if bit 2c of qh[l] is set, element l of sub-block 2c + 1 adds 16
 * if bit 2c + 1 is.
 */
struct block_q5_K {
	uint16_t	 d;
	uint16_t	 dmin;
	uint8_t		 scales[QUANT_K_SCALE_SIZE];
	uint8_t		 qh[QK_K / 8];
	uint8_t		 qs[QK_K / 2];
};
_Static_assert(sizeof(struct block_q5_K) == 176, "block_q5_K size");

/*
 * Q6_K: 16 sub-blocks of 16; x = d * scales[j] * (q - 32) with 6-bit q.
 * Two halves of 128 elements; half h uses ql[64h ..], qh[32h ..] and
 * scales[8h ..].  Within a half, for l < 32:
 *	element l	low nibble of ql[l]	 | bits 0-1 of qh[l] << 4
 *	element l + 32	low nibble of ql[l + 32] | bits 2-3 of qh[l] << 4
 *	element l + 64	high nibble of ql[l]	 | bits 4-5 of qh[l] << 4
 *	element l + 96	high nibble of ql[l + 32] | bits 6-7 of qh[l] << 4
 * and element e of the half uses scales[8h + e / 16].
 */
struct block_q6_K {
	uint8_t		 ql[QK_K / 2];
	uint8_t		 qh[QK_K / 4];
	int8_t		 scales[QK_K / 16];
	uint16_t	 d;
};
_Static_assert(sizeof(struct block_q6_K) == 210, "block_q6_K size");

/*
 * Packed groups of 8 rows (DESIGN 8), one per block column: the 8 rows'
 * scales, then byte 4k + e of row r's quants at qs[32k + 4r + e] (k < 8
 * for Q8_0, k < 4 for Q4_0, e < 4).  A group of 8 rows of n elements is
 * n / 32 of these, one after the other; rows past the matrix's last are
 * zeros.
 */
#define QUANT_PACK_ROWS	8

struct block_q8_0x8 {
	uint16_t	 d[QUANT_PACK_ROWS];
	int8_t		 qs[QUANT_PACK_ROWS * QK8_0];
};
_Static_assert(sizeof(struct block_q8_0x8) == 8 * 34, "block_q8_0x8 size");

struct block_q4_0x8 {
	uint16_t	 d[QUANT_PACK_ROWS];
	uint8_t		 qs[QUANT_PACK_ROWS * QK4_0 / 2];
};
_Static_assert(sizeof(struct block_q4_0x8) == 8 * 18, "block_q4_0x8 size");

/*
 * Packed K-quants (DESIGN 9), one per super-block column of a group of 8
 * rows: row r's d at d[r], its scale byte i at scales[8i + r], and byte
 * 4k + e of its qs at qs[32k + 4r + e] (qh, ql likewise).  Q6_K's
 * bias[r] is 128 times row r's sum over sub-blocks j of scales[j] times
 * the sum of its quants less 32.
 */
struct block_q4_Kx8 {
	uint16_t	 d[QUANT_PACK_ROWS];
	uint16_t	 dmin[QUANT_PACK_ROWS];
	uint8_t		 scales[QUANT_PACK_ROWS * QUANT_K_SCALE_SIZE];
	uint8_t		 qs[QUANT_PACK_ROWS * QK_K / 2];
};
_Static_assert(sizeof(struct block_q4_Kx8) == 8 * 144, "block_q4_Kx8 size");

struct block_q5_Kx8 {
	uint16_t	 d[QUANT_PACK_ROWS];
	uint16_t	 dmin[QUANT_PACK_ROWS];
	uint8_t		 scales[QUANT_PACK_ROWS * QUANT_K_SCALE_SIZE];
	uint8_t		 qh[QUANT_PACK_ROWS * QK_K / 8];
	uint8_t		 qs[QUANT_PACK_ROWS * QK_K / 2];
};
_Static_assert(sizeof(struct block_q5_Kx8) == 8 * 176, "block_q5_Kx8 size");
/* Code shared by Q4_K and Q5_K reads d, dmin and scales through the Q4_K
 * structs. */
_Static_assert(offsetof(struct block_q5_K, scales) ==
    offsetof(struct block_q4_K, scales) &&
    offsetof(struct block_q5_Kx8, scales) ==
    offsetof(struct block_q4_Kx8, scales), "Q4_K and Q5_K heads differ");

struct block_q6_Kx8 {
	uint16_t	 d[QUANT_PACK_ROWS];
	int32_t		 bias[QUANT_PACK_ROWS];
	int8_t		 scales[QUANT_PACK_ROWS * QK_K / 16];
	uint8_t		 ql[QUANT_PACK_ROWS * QK_K / 2];
	uint8_t		 qh[QUANT_PACK_ROWS * QK_K / 4];
};
_Static_assert(sizeof(struct block_q6_Kx8) == 8 * 214, "block_q6_Kx8 size");

/*
 * The j-th (0..7) 6-bit scale and min of a Q4_K/Q5_K block: the first
 * four are the low 6 bits of bytes 0-3 (scales) and 4-7 (mins); the last
 * four take their low 4 bits from the nibbles of bytes 8-11 and their top
 * 2 bits from the top bits of bytes 0-3 (scales) and 4-7 (mins).
 */
static inline void
quant_scale_min_k4(int j, const uint8_t *q, uint8_t *sc, uint8_t *m)
{
	if (j < 4) {
		*sc = q[j] & 63;
		*m = q[j + 4] & 63;
	} else {
		*sc = (q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4);
		*m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
	}
}

/*
 * One instruction set's kernels.  For every supported type t:
 *	dot[t](row, x, n)	 the row of n elements of type t dotted with x
 *	dequant[t](src, dst, n)	 n elements of type t to floats
 * and for plain floats:
 *	gemm_small(w, ldw, nw, x, ldx, nx, y, ldy, k)
 *		y[t * ldy + i] = w_i . x_t for i < nw (nw <= 4 rows of k
 *		floats, row stride ldw) and t < nx (inputs of k floats,
 *		stride ldx): the inner kernel of the batched-decode product.
 *	mmq[t](w, rs, nr, x, nc, y, ldy, n, stream)
 *		with int8 activations (struct quant_q8x), for Q8_0, Q4_0 and
 *		the K-quants (NULL for the other types): the tile
 *		y[c * ldy + r] = row r . x[c] for r < nr, c < nc, row r of n
 *		elements at (char *)w + r * rs.  The shapes a table takes are
 *		nr <= mmq_rows with nc == 1, and nr <= mmq_tile_rows with
 *		nc <= mmq_tile_cols; each output's arithmetic must not
 *		depend on the shape (DESIGN 6).  stream says the tile is the
 *		first to read its rows for its block of inputs, likely from
 *		memory: it prefetches ahead of what it reads; the tiles after
 *		it find the rows in the caches and do not.
 *	mmqp[t](g, nr, x, nc, y, ldy, n, stream)
 *		packed Q8_0, Q4_0 (DESIGN 8), Q4_K, Q5_K and Q6_K (DESIGN 9):
 *		y[c * ldy + r] = row r of the group of 8 at g times x[c], for
 *		r < nr and c < nc <= mmqp_cols; bit-identical on every
 *		table; stream as for mmq.  The K-quants' x[c].u must be
 *		set (struct quant_q8x).
 *	q8x_quantize		 quant_q8x_quantize(), bit-identical
 *	att_scores, att_pv, softmax
 *		the attention kernels behind vec_att_scores(),
 *		vec_att_pv() and vec_softmax() (quant.h; DESIGN 7)
 * n is a whole number of blocks; the callers check that.
 */
struct quant_q8x;

struct quant_kernels {
	enum quant_isa	 isa;
	float		(*dot[GGML_TYPE_COUNT])(const void *, const float *,
			    int64_t);
	void		(*dequant[GGML_TYPE_COUNT])(const void *, float *,
			    int64_t);
	void		(*mmq[GGML_TYPE_COUNT])(const void *, size_t, int,
			    const struct quant_q8x *, int, float *, int64_t,
			    int64_t, int);
	int		 mmq_rows, mmq_tile_rows, mmq_tile_cols;
	void		(*mmqp[GGML_TYPE_COUNT])(const void *, int,
			    const struct quant_q8x *, int, float *, int64_t,
			    int64_t, int);
	int		 mmqp_cols;
	void		(*q8x_quantize)(const float *, int64_t, int, int8_t *,
			    float *, int32_t *);
	void		(*att_scores)(const float *, int, const void *,
			    size_t, int, int64_t, int, float *, int64_t);
	void		(*att_pv)(const float *, int, int64_t, const void *,
			    size_t, int, int64_t, int, float *);
	void		(*softmax)(float *, int64_t, float);
	float		(*dot_f32)(const float *, const float *, int64_t);
	void		(*axpy_f32)(float *, float, const float *, int64_t);
	void		(*scale_f32)(float *, float, int64_t);
	void		(*swiglu)(float *, const float *, int64_t);
	void		(*gemm_small)(const float *, int64_t, int,
			    const float *, int64_t, int64_t, float *, int64_t,
			    int64_t);
};

/*
 * Int8 activations (the default for types with mmq kernels; MISTRAL_ACT_Q8=0
 * or quant_set_act_q8(0) turns them off).
 * The input x of a product is quantized once to int8, exactly as
 * llama.cpp's CPU backend does it, and each weight block's dot with it
 * becomes an exact integer sum scaled once.  Two formats, as in ggml:
 *   for Q8_0 and Q4_0 weights ("Q8_0" activations), per block b of 32:
 *	d[b] = f16(max|x| / 127) (rounded to half precision),
 *	q[i] = round_even(x[i] * 127 / max|x|);
 *   for the K-quants ("Q8_K"), per super-block b of 256, with M the
 *   element of largest magnitude:
 *	d[b] = M / -127, q[i] = min(127, round_even(x[i] * -127 / M)).
 * s[j] is the sum of q over each 32 elements (both formats), which the
 * Q4_0 offset and the Q4_K/Q5_K mins need; u (Q8_K only) is q + 128 as
 * unsigned bytes, the operand packed Q6_K's kernel multiplies by its
 * signed quants (DESIGN 9).  This reproduces llama.cpp's
 * logits on quantized models to float rounding, at a cost in activation
 * precision (a relative error ~1e-3 of a dot's magnitude) against the
 * float path, and makes products batch-invariant (DESIGN 6).
 */
struct quant_q8x {
	const int8_t	*q;	/* n */
	const float	*d;	/* n / 32 or n / 256 */
	const int32_t	*s;	/* n / 32 */
	const uint8_t	*u;	/* n, Q8_K only: q + 128; else NULL */
};

/* The K-quants take Q8_K activations, the others Q8_0. */
static inline int
quant_q8x_is_k(enum ggml_type t)
{
	return t == GGML_TYPE_Q4_K || t == GGML_TYPE_Q5_K ||
	    t == GGML_TYPE_Q6_K;
}

/* quant.c: quantize n floats (a multiple of 256 if kfmt, else of 32) into
 * q, d and s, in the format of quant_q8x_is_k(). */
void	 quant_q8x_quantize(const float *x, int64_t n, int kfmt, int8_t *q,
	     float *d, int32_t *s);
/* quant.c: the definition the dotq kernels are tested against. */
float	 quant_dotq_ref(enum ggml_type t, const void *row,
	     const struct quant_q8x *x, int64_t n);
/* quant.c: the scalar attention kernels (also the SIMD files' fallback for
 * head sizes that are not a multiple of 8). */
void	 quant_att_scores_ref(const float *q, int nq, const void *k, size_t ks,
	     int kt, int64_t nk, int hd, float *s, int64_t lds);
void	 quant_att_pv_ref(const float *p, int nq, int64_t ldp, const void *v,
	     size_t vs, int kt, int64_t nk, int hd, float *out);
/* quant.c: whether quant_matmul() uses int8 activations. */
int	 quant_act_q8(void);
void	 quant_set_act_q8(int on);

/* quant.c: the table in use (quant_init() has run once it is not NULL). */
const struct quant_kernels *quant_kernels(void);
/* quant.c: the scalar table, which the SIMD fills start from. */
void	 quant_scalar_fill(struct quant_kernels *k);
/* kernels-avx2.c, kernels-avx512.c: overwrite the entries they speed up
 * (the AVX-512 table starts from the AVX2 one; with vnni its packed int8
 * tiles are kernels-mmqp.h's VNNI instance). */
void	 quant_avx2_fill(struct quant_kernels *k);
void	 quant_avx512_fill(struct quant_kernels *k, int vnni);

#endif /* QUANT_INTERNAL_H */
