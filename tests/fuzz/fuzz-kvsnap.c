/*
 * fuzz-kvsnap.c: libFuzzer target for the KV snapshot reader
 * (kvcache_restore_buf and kvcache_restore in lib/kvcache.c), which reads
 * the snapshot chunks the daemon keeps in SQLite.
 *
 * Built and run by `make fuzz-smoke` (mk/fuzz.am); seeds in
 * tests/corpus/kvsnap/.  With MISTRAL_FUZZ_SEEDS=DIR in the environment
 * the program writes its seeds to DIR and exits instead.
 *
 * Input: one control byte, then the stream.
 *	bits 0-1	which cache (kvsnap_variants: type, W, G)
 *	bit 2		start from a filled cache (base 3, pos 15) instead of
 *			an empty one, so incremental streams can apply
 *	bit 3		overwrite the stream's model fingerprint with ours
 *	bit 4		recompute the header checksum
 * Bits 3 and 4 let mutations get past the header checks, which random
 * bytes would almost never do, and keep the seeds useful if the model's
 * fingerprint ever changes.
 *
 * Checked beyond the sanitizers (kvcache.h's promises):
 *   1. restore_buf returns 0, -EINVAL, -ESTALE or -ERANGE, never -EIO
 *      (it checks the length first); on failure the cache is unchanged.
 *   2. The streaming kvcache_restore (fed in odd-sized pieces) agrees:
 *      whatever restore_buf accepts it accepts with the same result; when
 *      it fails the cache is unchanged, or empty after -EIO (a body cut
 *      short).
 *   3. After a successful restore, saving from the same position gives
 *      the input back (apart from the reserved field and the checksum),
 *      and one more token can be run on the cache.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kvcache.h"
#include "mkmodel.h"
#include "model.h"

#define KVSNAP_HEADER	80
#define KVSNAP_N_VAR	4
#define KVSNAP_BASE	3	/* the filled start state: positions 3..14 */
#define KVSNAP_FILL	12

static const struct kv_params kvsnap_variants[KVSNAP_N_VAR] = {
	{ 8, 0, KV_TYPE_F32 },
	{ 8, 2, KV_TYPE_F16 },
	{ 4, 1, KV_TYPE_Q8_0 },
	{ 16, 4, KV_TYPE_F16 },
};

struct kvsnap_var {
	struct kvcache	*a, *b;		/* restore_buf / streaming restore */
	void		*filled;	/* full snapshot of the filled state */
	size_t		 filled_len;
};

static struct model	*kvsnap_model;
static struct fwd	*kvsnap_fwd;
static struct kvsnap_var kvsnap_var[KVSNAP_N_VAR];

static void
kvsnap_die(const char *what, int rc)
{
	fprintf(stderr, "fuzz-kvsnap: %s: %s\n", what, strerror(-rc));
	exit(1);
}

static uint64_t
kvsnap_fnv(const uint8_t *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	while (n-- > 0) {
		h ^= *p++;
		h *= 0x100000001b3ULL;
	}
	return h;
}

static void
kvsnap_put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t
kvsnap_get64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

/* A tiny model (head size 32, so every cache type fits) in a temp dir. */
static void
kvsnap_make_model(void)
{
	struct mkmodel_params	 p;
	const char		*tmp = getenv("TMPDIR");
	char			 dir[512], path[600], err[512];
	int			 rc;

	mkmodel_defaults(&p);
	p.dim = 64;
	p.n_heads = 2;
	p.n_kv_heads = 1;
	p.ffn_dim = 64;
	p.n_vocab = 300;
	p.seed = 9;
	snprintf(dir, sizeof dir, "%s/fuzz-kvsnap.XXXXXX",
	    tmp != NULL && *tmp != '\0' ? tmp : "/tmp");
	if (mkdtemp(dir) == NULL)
		kvsnap_die("mkdtemp", -errno);
	snprintf(path, sizeof path, "%s/model.gguf", dir);
	if ((rc = mkmodel_write(&p, path, err, sizeof err)) != 0 ||
	    (rc = model_load(path, &kvsnap_model, err, sizeof err)) != 0) {
		fprintf(stderr, "fuzz-kvsnap: %s\n", err);
		exit(1);
	}
	unlink(path);		/* the mapping keeps it */
	rmdir(dir);
}

/* Bring v's cache to the filled state (or empty) and return it. */
static struct kvcache *
kvsnap_start(struct kvsnap_var *v, struct kvcache *kv, int filled)
{
	int rc;

	if (!filled) {
		kvcache_reset(kv, 0);
		return kv;
	}
	if ((rc = kvcache_restore_buf(kv, v->filled, v->filled_len)) != 0)
		kvsnap_die("restoring the filled state", rc);
	return kv;
}

static void
kvsnap_setup(void)
{
	int32_t		 tokens[KVSNAP_FILL];
	int		 i, rc;

	kvsnap_make_model();
	if ((rc = fwd_create(kvsnap_model, KVSNAP_FILL, 1, &kvsnap_fwd)) != 0)
		kvsnap_die("fwd_create", rc);
	for (i = 0; i < KVSNAP_FILL; i++)
		tokens[i] = 1 + (i * 37) % 299;
	for (i = 0; i < KVSNAP_N_VAR; i++) {
		struct kvsnap_var *v = &kvsnap_var[i];

		if ((rc = kvcache_create(kvsnap_model, &kvsnap_variants[i],
		    &v->a)) != 0 || (rc = kvcache_create(kvsnap_model,
		    &kvsnap_variants[i], &v->b)) != 0)
			kvsnap_die("kvcache_create", rc);
		kvcache_reset(v->a, KVSNAP_BASE);
		if ((rc = fwd_prefill(kvsnap_fwd, v->a, tokens, KVSNAP_FILL, 0,
		    0, NULL)) < 0)
			kvsnap_die("fwd_prefill", rc);
		if ((rc = kvcache_save_buf(v->a, 0, &v->filled,
		    &v->filled_len)) != 0)
			kvsnap_die("kvcache_save_buf", rc);
	}
}

/* A cache's whole state as bytes (a full save), for comparisons. */
static void *
kvsnap_state(const struct kvcache *kv, size_t *len)
{
	void	*buf;
	int	 rc;

	if ((rc = kvcache_save_buf(kv, 0, &buf, len)) != 0)
		kvsnap_die("kvcache_save_buf", rc);
	return buf;
}

static int
kvsnap_same(const void *a, size_t alen, const void *b, size_t blen)
{
	return alen == blen && memcmp(a, b, alen) == 0;
}

/* A reader that hands out the stream in pieces of 1 to 97 bytes. */
struct kvsnap_reader {
	const uint8_t	*p;
	size_t		 len, off;
};

static int
kvsnap_read(void *ctx, void *buf, size_t n)
{
	struct kvsnap_reader	*r = ctx;
	uint8_t			*dst = buf;
	size_t			 piece;

	while (n > 0) {
		if (r->off >= r->len)
			return -EIO;
		piece = 1 + r->off % 97;
		if (piece > n)
			piece = n;
		if (piece > r->len - r->off)
			piece = r->len - r->off;
		memcpy(dst, r->p + r->off, piece);
		dst += piece;
		n -= piece;
		r->off += piece;
	}
	return 0;
}

/* Write one seed: control byte, then the stream. */
static void
kvsnap_seed(const char *dir, const char *name, uint8_t ctrl, const void *buf,
    size_t len)
{
	char	 path[1024];
	FILE	*f;

	snprintf(path, sizeof path, "%s/%s", dir, name);
	if ((f = fopen(path, "wb")) == NULL ||
	    fwrite(&ctrl, 1, 1, f) != 1 ||
	    (len > 0 && fwrite(buf, 1, len, f) != len) || fclose(f) != 0)
		kvsnap_die(path, -errno);
}

/*
 * Seeds for every variant: the full snapshot of the filled state, an
 * incremental one (from position 11) and an empty-cache snapshot.
 */
static void
kvsnap_write_seeds(const char *dir)
{
	int32_t	 tok = 5;
	void	*buf;
	size_t	 len;
	char	 name[64];
	int	 i, rc;

	for (i = 0; i < KVSNAP_N_VAR; i++) {
		struct kvsnap_var *v = &kvsnap_var[i];

		snprintf(name, sizeof name, "full-%d", i);
		kvsnap_seed(dir, name, (uint8_t)i, v->filled, v->filled_len);

		kvsnap_start(v, v->a, 1);
		if ((rc = fwd_prefill(kvsnap_fwd, v->a, &tok, 1, 0, 0,
		    NULL)) < 0)
			kvsnap_die("fwd_prefill", rc);
		if ((rc = kvcache_save_buf(v->a, 11, &buf, &len)) != 0)
			kvsnap_die("kvcache_save_buf", rc);
		snprintf(name, sizeof name, "incr-%d", i);
		kvsnap_seed(dir, name, (uint8_t)(i | 4), buf, len);
		free(buf);

		kvcache_reset(v->a, 0);
		if ((rc = kvcache_save_buf(v->a, 0, &buf, &len)) != 0)
			kvsnap_die("kvcache_save_buf", rc);
		snprintf(name, sizeof name, "empty-%d", i);
		kvsnap_seed(dir, name, (uint8_t)(i | 4), buf, len);
		free(buf);
	}
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *seeds = getenv("MISTRAL_FUZZ_SEEDS");

	kvsnap_setup();
	if (seeds != NULL && *seeds != '\0') {
		kvsnap_write_seeds(seeds);
		exit(0);
	}
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct kvsnap_var	*v;
	struct kvsnap_reader	 r;
	struct kvcache		*a, *b;
	uint8_t			*s = NULL;
	void			*before = NULL, *after = NULL, *again = NULL;
	size_t			 n, before_len, after_len, again_len;
	int64_t			 from;
	int32_t			 tok = 7;
	int			 ctrl, rc, rc_stream;

	if (size < 1)
		return 0;
	ctrl = data[0];
	n = size - 1;
	v = &kvsnap_var[ctrl & 3];
	if (n > 0 && (s = malloc(n)) == NULL)
		return 0;
	if (n > 0)
		memcpy(s, data + 1, n);
	if ((ctrl & 8) && n >= KVSNAP_HEADER)
		kvsnap_put64(s + 8, model_fingerprint(kvsnap_model));
	if ((ctrl & 16) && n >= KVSNAP_HEADER)
		kvsnap_put64(s + 72, kvsnap_fnv(s, 72));

	a = kvsnap_start(v, v->a, ctrl & 4);
	b = kvsnap_start(v, v->b, ctrl & 4);
	before = kvsnap_state(a, &before_len);

	rc = kvcache_restore_buf(a, s, n);
	if (rc != 0 && rc != -EINVAL && rc != -ESTALE && rc != -ERANGE)
		abort();		/* promise 1 */
	if (rc != 0) {
		after = kvsnap_state(a, &after_len);
		if (!kvsnap_same(before, before_len, after, after_len))
			abort();	/* a refused stream changed the cache */
		free(after);
		after = NULL;
	}

	r.p = s;
	r.len = n;
	r.off = 0;
	rc_stream = kvcache_restore(b, kvsnap_read, &r);
	if (rc_stream != 0) {
		/* Promise 2: unchanged, or after -EIO in the body, empty. */
		again = kvsnap_state(b, &again_len);
		if (!kvsnap_same(before, before_len, again, again_len) &&
		    (rc_stream != -EIO || kvcache_pos(b) != kvcache_base(b)))
			abort();
	}
	if (rc != 0)
		goto out;
	if (rc_stream != 0)
		abort();		/* promise 2: the stream agrees */

	after = kvsnap_state(a, &after_len);
	free(again);
	again = kvsnap_state(b, &again_len);
	if (!kvsnap_same(after, after_len, again, again_len))
		abort();
	free(after);

	/* Promise 3: saving again from `from` gives the stream back. */
	from = (int64_t)kvsnap_get64(s + 48);
	if (kvcache_save_buf(a, from, &after, &after_len) != 0)
		abort();
	if (after_len != n || memcmp(after, s, 36) != 0 ||
	    memcmp((uint8_t *)after + 40, s + 40, 32) != 0 ||
	    memcmp((uint8_t *)after + KVSNAP_HEADER, s + KVSNAP_HEADER,
	    n - KVSNAP_HEADER) != 0)
		abort();
	if (fwd_prefill(kvsnap_fwd, a, &tok, 1, 0, 0, NULL) < 0 ||
	    kvcache_pos(a) != (int64_t)kvsnap_get64(s + 56) + 1)
		abort();
out:
	free(before);
	free(after);
	free(again);
	free(s);
	return 0;
}
