/*
 * quant.h: tensor element types, quantized block layouts and the kernels
 * that read them.
 *
 * The type numbers are ggml's, as stored in GGUF files.  Each block layout
 * is defined once in quant.c with a static_assert on its size.  For every
 * supported type there is a scalar reference (dequantize a row, dot a row
 * with a float vector); SIMD versions (AVX2+FMA, AVX-512) are chosen once
 * at start-up by quant_init() and tested against the scalar reference.
 * The environment variable MISTRAL_ISA=scalar|avx2|avx512 forces a path
 * (falling back to what the CPU supports) so tests cover each of them.
 */
#ifndef QUANT_H
#define QUANT_H

#include <stddef.h>
#include <stdint.h>

enum ggml_type {
	GGML_TYPE_F32 = 0,
	GGML_TYPE_F16 = 1,
	GGML_TYPE_Q4_0 = 2,
	GGML_TYPE_Q4_1 = 3,
	GGML_TYPE_Q5_0 = 6,
	GGML_TYPE_Q5_1 = 7,
	GGML_TYPE_Q8_0 = 8,
	GGML_TYPE_Q8_1 = 9,
	GGML_TYPE_Q2_K = 10,
	GGML_TYPE_Q3_K = 11,
	GGML_TYPE_Q4_K = 12,
	GGML_TYPE_Q5_K = 13,
	GGML_TYPE_Q6_K = 14,
	GGML_TYPE_Q8_K = 15,
	GGML_TYPE_BF16 = 30,
	GGML_TYPE_COUNT = 40,	/* upper bound for table sizes */
};

enum quant_isa {
	QUANT_ISA_SCALAR = 0,
	QUANT_ISA_AVX2 = 1,	/* AVX2 + FMA + F16C */
	QUANT_ISA_AVX512 = 2,	/* AVX-512 F/BW/VL (+VNNI, BF16 if present) */
};

/* Layout of a type: elements per block and bytes per block. */
struct quant_traits {
	const char	*name;		/* "q4_K", as ggml names it */
	uint32_t	 block_size;	/* elements */
	uint32_t	 type_size;	/* bytes per block */
	int		 supported;	/* 1 when this library computes with it */
};

/* Traits for any ggml type number, or NULL if the number is unknown. */
const struct quant_traits *quant_traits(uint32_t type);
/* Bytes of a row of n elements (n must be a multiple of the block size). */
size_t	 quant_row_size(enum ggml_type t, int64_t n);

/* Detect the CPU (honouring MISTRAL_ISA) and pick kernels.  Idempotent and
 * thread-safe; every other function calls it on first use. */
void	 quant_init(void);
enum quant_isa quant_isa(void);
const char *quant_isa_name(enum quant_isa isa);
/* Force a path (tests); returns the path actually chosen, which is the
 * best the CPU supports at or below the one asked for. */
enum quant_isa quant_set_isa(enum quant_isa isa);

/* Half-precision conversions (IEEE binary16 and bfloat16). */
float	 quant_f16_to_f32(uint16_t h);
uint16_t quant_f32_to_f16(float f);
float	 quant_bf16_to_f32(uint16_t h);
uint16_t quant_f32_to_bf16(float f);

/*
 * Scalar references.  n is the number of elements and must be a multiple of
 * the type's block size.  These are the definitions; every fast path must
 * agree with them (dequantization bit-exactly, dots within float rounding).
 */
void	 quant_dequantize_row_ref(enum ggml_type t, const void *src,
	     float *dst, int64_t n);
float	 quant_dot_ref(enum ggml_type t, const void *row, const float *x,
	     int64_t n);

/* Dispatched versions of the same. */
void	 quant_dequantize_row(enum ggml_type t, const void *src, float *dst,
	     int64_t n);
float	 quant_dot(enum ggml_type t, const void *row, const float *x,
	     int64_t n);

/*
 * Quantize n floats into blocks of type t (F32, F16, BF16, Q8_0, Q4_0,
 * Q4_K, Q5_K, Q6_K).  Round-to-nearest with the block scale chosen from the
 * block's maximum; not the importance-weighted search llama-quantize does,
 * but the result is a valid block that dequantizes close to the input.
 * Returns 0, or -EINVAL for an unsupported type or bad n.
 */
int	 quant_quantize_row(enum ggml_type t, const float *src, void *dst,
	     int64_t n);

/*
 * Matrix products against a weight matrix W of `rows` rows of `cols`
 * elements of type t (row r starts at (char *)w + r * quant_row_size(t,
 * cols)).  x holds n input vectors of cols floats (row-major, n x cols);
 * y receives n output vectors of `rows` floats (n x rows, row stride ldy).
 * Only rows [r0, r1) are computed, so callers split the work over threads.
 * n == 1 is the decode mat-vec; larger n (prefill, batched decode) reads
 * each weight row once for all n inputs.  scratch must hold at least
 * quant_matmul_scratch(t, cols, r1 - r0) bytes, or be NULL (the function
 * then uses stack space for small cases or allocates).
 */
void	 quant_matmul(enum ggml_type t, const void *w, int64_t rows,
	     int64_t cols, const float *x, int64_t n, float *y, int64_t ldy,
	     int64_t r0, int64_t r1, void *scratch);
size_t	 quant_matmul_scratch(enum ggml_type t, int64_t cols, int64_t nrows);

/*
 * Int8 activations.  Products with Q8_0, Q4_0 and K-quant weights quantize
 * their inputs to int8 first, as llama.cpp does, which also makes each
 * output independent of the rest of the batch (quant-internal.h).  A
 * caller that multiplies the same inputs by several matrices, or splits
 * one product over threads, quantizes them once:
 *	fmt = quant_act_fmt(t, cols)	   QUANT_ACT_NONE: use quant_matmul()
 *	quant_act_bind(&a, buf, fmt, cols, n)   buf of quant_act_bytes()
 *	quant_act_fill(&a, x, i0, i1)	   inputs i0..i1-1 of x (n x cols)
 *	quant_act_slice(&a, i0, n)	   inputs i0..i0+n-1 of a, as an act
 *					   of their own (no copy)
 *	quant_matmul_act(t, w, rows, cols, &a, y, ldy, r0, r1)
 * which computes exactly what quant_matmul(t, w, rows, cols, x, n, ...)
 * does.  Matrices whose types share a format share the quantized inputs.
 * MISTRAL_ACT_Q8=0 in the environment turns int8 activations off.
 */
#define QUANT_ACT_NONE	0
#define QUANT_ACT_Q8_0	1	/* Q8_0 and Q4_0 weights: scale per 32 */
#define QUANT_ACT_Q8_K	2	/* K-quants: scale per 256 */

struct quant_act {
	int		 fmt;
	int64_t		 cols, n;
	int8_t		*q;	/* n * cols */
	float		*d;	/* per block of each input */
	int32_t		*s;	/* sum of q per 32 */
	uint8_t		*u;	/* QUANT_ACT_Q8_K: q + 128; else NULL */
};

int	 quant_act_fmt(enum ggml_type t, int64_t cols);
size_t	 quant_act_bytes(int fmt, int64_t cols, int64_t n);
void	 quant_act_bind(struct quant_act *a, void *buf, int fmt, int64_t cols,
	     int64_t n);
void	 quant_act_fill(const struct quant_act *a, const float *x, int64_t i0,
	     int64_t i1);
struct quant_act quant_act_slice(const struct quant_act *a, int64_t i0,
	     int64_t n);
void	 quant_matmul_act(enum ggml_type t, const void *w, int64_t rows,
	     int64_t cols, const struct quant_act *a, float *y, int64_t ldy,
	     int64_t r0, int64_t r1);

/*
 * Packed weights.  A Q8_0, Q4_0, Q4_K, Q5_K or Q6_K matrix that is
 * multiplied many times is best rearranged once, at load, so that 8 rows are
 * read together: each group of 8 rows keeps, per block (super-block for the
 * K-quants), the 8 rows' scales side by side and then their quants
 * interleaved 4 bytes at a time, so one 32-byte load holds a piece of every
 * row and the 8 sums come out in the lanes of one vector (quant-internal.h,
 * DESIGNS 8 and 9).
 *	quant_packable(t, cols)		1 if t has a packed form for rows of
 *					cols elements
 *	quant_pack_size(t, rows, cols)	bytes of the packed matrix (rows
 *					rounded up to 8; the padding rows are
 *					zeros); 0 if not packable.  A group
 *					of 8 rows takes quant_pack_size(t, 8,
 *					cols) bytes, 8 rows' bytes except for
 *					Q6_K (8 x 214 per super-block for
 *					8 x 210), so rows [r0, r1) (r0 a
 *					multiple of 8) pack to
 *					quant_pack_size(t, r1 - r0, cols)
 *					bytes at quant_pack_size(t, r0, cols)
 *	quant_pack(t, w, rows, cols, dst)
 *	quant_matmul_packed(t, p, rows, cols, &a, y, ldy, r0, r1)
 *		rows [r0, r1) of the product with int8 activations a (of
 *		quant_act_fmt(t, cols)), r0 a multiple of 8.  Each output is
 *		the exact integer sums of every block, scaled and added in
 *		block order with fused multiply-adds, on every instruction
 *		set: the same bits on scalar and SIMD kernels, in any batch.
 *		(quant_matmul_act()
 *		on the unpacked matrix rounds in another order, so the two
 *		agree within float rounding.)
 */
int	 quant_packable(enum ggml_type t, int64_t cols);
size_t	 quant_pack_size(enum ggml_type t, int64_t rows, int64_t cols);
void	 quant_pack(enum ggml_type t, const void *w, int64_t rows, int64_t cols,
	     void *dst);
void	 quant_matmul_packed(enum ggml_type t, const void *p, int64_t rows,
	     int64_t cols, const struct quant_act *a, float *y, int64_t ldy,
	     int64_t r0, int64_t r1);

/* Small vector kernels used by the forward pass, dispatched like the rest. */
float	 vec_dot_f32(const float *a, const float *b, int64_t n);
void	 vec_axpy_f32(float *y, float a, const float *x, int64_t n); /* y += a x */
void	 vec_scale_f32(float *y, float a, int64_t n);
/* g = silu(g) * u = g / (1 + e^-g) * u, element by element (the scalar
 * kernel with expf, the SIMD ones with an exp within a few ulp) */
void	 vec_swiglu(float *g, const float *u, int64_t n);

/*
 * Attention, for nq query heads that see the same keys (heads sharing a
 * kv head, at one position); q holds nq vectors of hd floats; key and
 * value row j starts at (char *)k + j * ks (v + j * vs) and holds hd
 * elements stored as kt:
 *	vec_att_scores: s[i * lds + j] = q_i . k_j
 *	vec_att_pv:	out[i * hd + d] += sum over j, in order, of
 *			p[i * ldp + j] v_j[d]
 *	vec_softmax:	s = softmax(scale * s) over s[0..n-1]
 * Each result depends only on its own inputs, never on nq, nk, the
 * storage or the other rows, so attention split into calls any way gives
 * the same bits (quant-internal.h, DESIGN 7).
 */
#define QUANT_KV_F32	0
#define QUANT_KV_F16	1
#define QUANT_KV_Q8_0	2	/* hd a multiple of 32, rows of Q8_0 blocks */

void	 vec_att_scores(const float *q, int nq, const void *k, size_t ks,
	     int kt, int64_t nk, int hd, float *s, int64_t lds);
void	 vec_att_pv(const float *p, int nq, int64_t ldp, const void *v,
	     size_t vs, int kt, int64_t nk, int hd, float *out);
void	 vec_softmax(float *s, int64_t n, float scale);

#endif /* QUANT_H */
