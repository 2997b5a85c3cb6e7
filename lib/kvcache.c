/*
 * kvcache.c: the rolling-buffer KV cache of one sequence, and its
 * serialisation for snapshots.
 *
 * DESIGN
 *
 * 1. Layout (internal.h): per layer, G global slots then W ring slots, for
 *    K and for V.  Position p >= base + G lives in ring slot p mod W, so a
 *    cache never moves data and never grows.  Keys are stored after RoPE,
 *    so nothing is ever re-rotated.
 * 2. After a forward step the ring holds positions max(base+G, pos-W) ..
 *    pos-1, which is everything a query at pos or later can attend to
 *    (t-W+1 >= pos-W+1).
 * 3. Stream format, all integers little-endian, written field by field:
 *
 *	offset	size	field
 *	0	4	magic "KSV1"
 *	4	4	version (1)
 *	8	8	model fingerprint
 *	16	4	layers
 *	20	4	kv_dim (kv heads x head size)
 *	24	4	element type (enum kv_type)
 *	28	4	W
 *	32	4	G
 *	36	4	reserved (0)
 *	40	8	base (first position of the sequence)
 *	48	8	from (positions before this are not included)
 *	56	8	pos (next position once applied)
 *	64	4	number of global slots included
 *	68	4	number of ring positions included
 *	72	8	FNV-1a of bytes 0..71
 *	80	...	for each included position, ascending (globals first):
 *			for each layer: K row, V row (row_bytes each:
 *			kv_dim elements, the kv heads one after the other)
 *
 *    A full stream has from == base.  An incremental one (from > base)
 *    applies to a cache whose position lies in [from, pos].
 * 4. In memory each kv head's slots are contiguous (internal.h), since the
 *    attention of a decode step reads one head's whole window at a time:
 *    streaming 128-byte pieces (an f16 head of 64) at a stride of a whole
 *    slot row made the hardware prefetcher lose track.  The stream above
 *    keeps slot rows, so snapshots written before this layout still load:
 *    a row is written and read as its heads' pieces in order.  A q8_0
 *    head is whole blocks (head_dim % 32 == 0, checked at creation).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define KV_HEADER_BYTES 80

const char *
kv_type_name(enum kv_type t)
{
	switch (t) {
	case KV_TYPE_F32: return "f32";
	case KV_TYPE_F16: return "f16";
	case KV_TYPE_Q8_0: return "q8_0";
	}
	return "unknown";
}

int
kv_type_parse(const char *s, enum kv_type *out)
{
	if (strcmp(s, "f32") == 0)
		*out = KV_TYPE_F32;
	else if (strcmp(s, "f16") == 0)
		*out = KV_TYPE_F16;
	else if (strcmp(s, "q8_0") == 0)
		*out = KV_TYPE_Q8_0;
	else
		return -EINVAL;
	return 0;
}

enum ggml_type
kv_type_ggml(enum kv_type t)
{
	switch (t) {
	case KV_TYPE_F32: return GGML_TYPE_F32;
	case KV_TYPE_Q8_0: return GGML_TYPE_Q8_0;
	case KV_TYPE_F16: break;
	}
	return GGML_TYPE_F16;
}

/* Resolve defaults and check parameters; fills *r. */
static int
kvcache_resolve(const struct model *m, const struct kv_params *p,
    struct kv_params *r)
{
	const struct model_hparams *hp = model_hparams(m);

	*r = *p;
	if (r->window == 0)
		r->window = model_window(m, 0, 0, NULL);
	if (r->type != KV_TYPE_F32 && r->type != KV_TYPE_F16 &&
	    r->type != KV_TYPE_Q8_0)
		return -EINVAL;
	if (r->window > (1u << 24) || r->n_global > (1u << 20))
		return -EINVAL;
	if (r->type == KV_TYPE_Q8_0 && hp->head_dim % 32 != 0)
		return -EINVAL;	/* q8_0 blocks must not straddle heads */
	return 0;
}

static size_t
kvcache_row_bytes(const struct model *m, enum kv_type t)
{
	const struct model_hparams *hp = model_hparams(m);

	return quant_row_size(kv_type_ggml(t),
	    (int64_t)hp->n_kv_heads * hp->head_dim);
}

size_t
kvcache_size_for(const struct model *m, const struct kv_params *p)
{
	struct kv_params r;

	if (kvcache_resolve(m, p, &r) != 0)
		return 0;
	return 2 * (size_t)model_hparams(m)->n_layers *
	    ((size_t)r.window + r.n_global) * kvcache_row_bytes(m, r.type);
}

int
kvcache_create(const struct model *m, const struct kv_params *p,
    struct kvcache **out)
{
	const struct model_hparams *hp = model_hparams(m);
	struct kvcache *kv;
	size_t half;
	int rc;

	*out = NULL;
	if ((kv = calloc(1, sizeof *kv)) == NULL)
		return -ENOMEM;
	if ((rc = kvcache_resolve(m, p, &kv->p)) != 0) {
		free(kv);
		return rc;
	}
	kv->model = m;
	kv->n_layers = hp->n_layers;
	kv->n_heads = hp->n_kv_heads;
	kv->kv_dim = hp->n_kv_heads * hp->head_dim;
	kv->n_slots = kv->p.window + kv->p.n_global;
	kv->row_bytes = kvcache_row_bytes(m, kv->p.type);
	kv->head_bytes = kv->row_bytes / kv->n_heads;
	half = (size_t)kv->n_layers * kv->n_slots * kv->row_bytes;
	kv->k = calloc(1, half);
	kv->v = calloc(1, half);
	if (kv->k == NULL || kv->v == NULL) {
		kvcache_free(kv);
		return -ENOMEM;
	}
	*out = kv;
	return 0;
}

void
kvcache_free(struct kvcache *kv)
{
	if (kv == NULL)
		return;
	free(kv->k);
	free(kv->v);
	free(kv);
}

static int
kvcache_same_layout(const struct kvcache *a, const struct kvcache *b)
{
	return a->model == b->model && a->p.window == b->p.window &&
	    a->p.n_global == b->p.n_global && a->p.type == b->p.type;
}

int
kvcache_copy(struct kvcache *dst, const struct kvcache *src)
{
	size_t half = (size_t)src->n_layers * src->n_slots * src->row_bytes;

	if (!kvcache_same_layout(dst, src))
		return -EINVAL;
	memcpy(dst->k, src->k, half);
	memcpy(dst->v, src->v, half);
	dst->base = src->base;
	dst->pos = src->pos;
	return 0;
}

void
kvcache_reset(struct kvcache *kv, int64_t base)
{
	kv->base = base < 0 ? 0 : base;
	kv->pos = kv->base;
}

const struct kv_params *
kvcache_params(const struct kvcache *kv)
{
	return &kv->p;
}

size_t
kvcache_bytes(const struct kvcache *kv)
{
	return 2 * (size_t)kv->n_layers * kv->n_slots * kv->row_bytes;
}

int64_t
kvcache_base(const struct kvcache *kv)
{
	return kv->base;
}

int64_t
kvcache_pos(const struct kvcache *kv)
{
	return kv->pos;
}

int64_t
kvcache_evicted(const struct kvcache *kv)
{
	int64_t first_visible = kv->pos - (int64_t)kv->p.window + 1;
	int64_t first_ring = kv->base + kv->p.n_global;

	return first_visible > first_ring ? first_visible - first_ring : 0;
}

/* ---- serialisation ------------------------------------------------- */

/* The positions a stream from `since` covers: globals [g0, g1) and ring
 * positions [r0, r1). */
struct kv_span {
	int64_t	from, g0, g1, r0, r1;
};

static void
kvcache_span(const struct kvcache *kv, int64_t since, struct kv_span *s)
{
	int64_t gend = kv->base + kv->p.n_global;

	s->from = since < kv->base ? kv->base : since;
	if (s->from > kv->pos)
		s->from = kv->pos;
	s->g0 = s->from;
	s->g1 = gend < kv->pos ? gend : kv->pos;
	if (s->g0 > s->g1)
		s->g0 = s->g1;
	s->r0 = kv->pos - (int64_t)kv->p.window;
	if (s->r0 < gend)
		s->r0 = gend;
	if (s->r0 < s->from)
		s->r0 = s->from;
	s->r1 = kv->pos;
	if (s->r0 > s->r1)
		s->r0 = s->r1;
}

static void
kv_put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void
kv_put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t
kv_get32(const uint8_t *p)
{
	uint32_t v = 0;

	for (int i = 3; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static uint64_t
kv_get64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static uint64_t
kv_fnv(const uint8_t *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	while (n-- > 0) {
		h ^= *p++;
		h *= 0x100000001b3ULL;
	}
	return h;
}

size_t
kvcache_save_size(const struct kvcache *kv, int64_t since)
{
	struct kv_span s;

	kvcache_span(kv, since, &s);
	return KV_HEADER_BYTES + (size_t)((s.g1 - s.g0) + (s.r1 - s.r0)) *
	    kv->n_layers * 2 * kv->row_bytes;
}

void
kvcache_put_rows(struct kvcache *kv, uint32_t layer, size_t slot,
    const uint8_t *k, const uint8_t *v)
{
	for (uint32_t h = 0; h < kv->n_heads; h++) {
		memcpy(kvcache_k_head(kv, layer, h, slot), k + h *
		    kv->head_bytes, kv->head_bytes);
		memcpy(kvcache_v_head(kv, layer, h, slot), v + h *
		    kv->head_bytes, kv->head_bytes);
	}
}

void
kvcache_get_rows(const struct kvcache *kv, uint32_t layer, size_t slot,
    uint8_t *k, uint8_t *v)
{
	for (uint32_t h = 0; h < kv->n_heads; h++) {
		memcpy(k + h * kv->head_bytes, kvcache_k_head(kv, layer, h,
		    slot), kv->head_bytes);
		memcpy(v + h * kv->head_bytes, kvcache_v_head(kv, layer, h,
		    slot), kv->head_bytes);
	}
}

/* The bytes of one position in a stream: every layer's K row, V row. */
static size_t
kvcache_position_bytes(const struct kvcache *kv)
{
	return (size_t)kv->n_layers * 2 * kv->row_bytes;
}

/* Gather position p's rows into buf and write them with one call. */
static int
kvcache_write_position(const struct kvcache *kv, int64_t p, uint8_t *buf,
    kvcache_write_fn *write, void *ctx)
{
	size_t slot = kvcache_slot_of(kv, p);
	uint32_t l;

	for (l = 0; l < kv->n_layers; l++)
		kvcache_get_rows(kv, l, slot, buf + 2 * l * kv->row_bytes,
		    buf + (2 * l + 1) * kv->row_bytes);
	return write(ctx, buf, kvcache_position_bytes(kv));
}

int
kvcache_save(const struct kvcache *kv, int64_t since, kvcache_write_fn *write,
    void *ctx)
{
	uint8_t h[KV_HEADER_BYTES], *buf;
	struct kv_span s;
	int64_t p;
	int rc;

	kvcache_span(kv, since, &s);
	memset(h, 0, sizeof h);
	kv_put32(h + 0, KVCACHE_MAGIC);
	kv_put32(h + 4, KVCACHE_VERSION);
	kv_put64(h + 8, model_fingerprint(kv->model));
	kv_put32(h + 16, kv->n_layers);
	kv_put32(h + 20, kv->kv_dim);
	kv_put32(h + 24, (uint32_t)kv->p.type);
	kv_put32(h + 28, kv->p.window);
	kv_put32(h + 32, kv->p.n_global);
	kv_put64(h + 40, (uint64_t)kv->base);
	kv_put64(h + 48, (uint64_t)s.from);
	kv_put64(h + 56, (uint64_t)kv->pos);
	kv_put32(h + 64, (uint32_t)(s.g1 - s.g0));
	kv_put32(h + 68, (uint32_t)(s.r1 - s.r0));
	kv_put64(h + 72, kv_fnv(h, 72));
	if ((buf = malloc(kvcache_position_bytes(kv))) == NULL)
		return -ENOMEM;
	if ((rc = write(ctx, h, sizeof h)) != 0)
		goto out;
	for (p = s.g0; p < s.g1 && rc == 0; p++)
		rc = kvcache_write_position(kv, p, buf, write, ctx);
	for (p = s.r0; p < s.r1 && rc == 0; p++)
		rc = kvcache_write_position(kv, p, buf, write, ctx);
out:
	free(buf);
	return rc;
}

/* A parsed stream header. */
struct kv_header {
	int64_t		base;
	int64_t		pos;
	struct kv_span	span;
};

/*
 * Check a stream header against this cache: same model and layout, and a
 * span that is exactly what kvcache_save() would have written.
 */
static int
kvcache_parse_header(const struct kvcache *kv, const uint8_t *h,
    struct kv_header *hd)
{
	struct kvcache tmp;
	int64_t from;

	if (kv_get32(h) != KVCACHE_MAGIC || kv_get64(h + 72) != kv_fnv(h, 72))
		return -EINVAL;
	if (kv_get32(h + 4) != KVCACHE_VERSION)
		return -EINVAL;
	if (kv_get64(h + 8) != model_fingerprint(kv->model))
		return -ESTALE;
	if (kv_get32(h + 16) != kv->n_layers || kv_get32(h + 20) != kv->kv_dim ||
	    kv_get32(h + 24) != (uint32_t)kv->p.type ||
	    kv_get32(h + 28) != kv->p.window ||
	    kv_get32(h + 32) != kv->p.n_global)
		return -EINVAL;
	hd->base = (int64_t)kv_get64(h + 40);
	from = (int64_t)kv_get64(h + 48);
	hd->pos = (int64_t)kv_get64(h + 56);
	if (hd->base < 0 || from < hd->base || hd->pos < from ||
	    hd->pos > INT64_MAX / 2)
		return -EINVAL;
	tmp = *kv;
	tmp.base = hd->base;
	tmp.pos = hd->pos;
	kvcache_span(&tmp, from, &hd->span);
	if (hd->span.from != from ||
	    (int64_t)kv_get32(h + 64) != hd->span.g1 - hd->span.g0 ||
	    (int64_t)kv_get32(h + 68) != hd->span.r1 - hd->span.r0)
		return -EINVAL;
	if (from > hd->base && (kv->base != hd->base || kv->pos < from ||
	    kv->pos > hd->pos))
		return -ERANGE;
	return 0;
}

/* Read position p's rows with one call into buf and scatter them. */
static int
kvcache_read_position(struct kvcache *kv, int64_t p, uint8_t *buf,
    kvcache_read_fn *read, void *ctx)
{
	size_t slot = kvcache_slot_of(kv, p);
	uint32_t l;

	if (read(ctx, buf, kvcache_position_bytes(kv)) != 0)
		return -EIO;
	for (l = 0; l < kv->n_layers; l++)
		kvcache_put_rows(kv, l, slot, buf + 2 * l * kv->row_bytes,
		    buf + (2 * l + 1) * kv->row_bytes);
	return 0;
}

int
kvcache_restore(struct kvcache *kv, kvcache_read_fn *read, void *ctx)
{
	uint8_t h[KV_HEADER_BYTES], *buf;
	struct kv_header hd;
	int64_t p;
	int rc;

	if (read(ctx, h, sizeof h) != 0)
		return -EIO;
	if ((rc = kvcache_parse_header(kv, h, &hd)) != 0)
		return rc;
	if ((buf = malloc(kvcache_position_bytes(kv))) == NULL)
		return -ENOMEM;
	kv->base = hd.base;
	for (p = hd.span.g0; p < hd.span.g1; p++)
		if (kvcache_read_position(kv, p, buf, read, ctx) != 0)
			goto fail;
	for (p = hd.span.r0; p < hd.span.r1; p++)
		if (kvcache_read_position(kv, p, buf, read, ctx) != 0)
			goto fail;
	kv->pos = hd.pos;
	free(buf);
	return 0;
fail:
	free(buf);
	kvcache_reset(kv, hd.base);
	return -EIO;
}

struct kv_membuf {
	uint8_t		*buf;
	size_t		 len;
	size_t		 off;
};

static int
kvcache_mem_write(void *ctx, const void *p, size_t n)
{
	struct kv_membuf *m = ctx;

	if (n > m->len - m->off)
		return -ENOSPC;
	memcpy(m->buf + m->off, p, n);
	m->off += n;
	return 0;
}

static int
kvcache_mem_read(void *ctx, void *p, size_t n)
{
	struct kv_membuf *m = ctx;

	if (n > m->len - m->off)
		return -EIO;
	memcpy(p, m->buf + m->off, n);
	m->off += n;
	return 0;
}

int
kvcache_save_buf(const struct kvcache *kv, int64_t since, void **buf,
    size_t *len)
{
	struct kv_membuf m;
	int rc;

	*buf = NULL;
	*len = 0;
	m.len = kvcache_save_size(kv, since);
	m.off = 0;
	if ((m.buf = malloc(m.len)) == NULL)
		return -ENOMEM;
	if ((rc = kvcache_save(kv, since, kvcache_mem_write, &m)) != 0) {
		free(m.buf);
		return rc;
	}
	*buf = m.buf;
	*len = m.len;
	return 0;
}

int
kvcache_restore_buf(struct kvcache *kv, const void *buf, size_t len)
{
	struct kv_membuf m = { (uint8_t *)(uintptr_t)buf, len, 0 };
	struct kv_header hd;
	size_t want;
	int rc;

	if (len < KV_HEADER_BYTES)
		return -EINVAL;
	if ((rc = kvcache_parse_header(kv, buf, &hd)) != 0)
		return rc;
	want = KV_HEADER_BYTES + (size_t)((hd.span.g1 - hd.span.g0) +
	    (hd.span.r1 - hd.span.r0)) * kv->n_layers * 2 * kv->row_bytes;
	if (len != want)
		return -EINVAL;
	return kvcache_restore(kv, kvcache_mem_read, &m);
}
