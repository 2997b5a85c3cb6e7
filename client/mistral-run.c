/*
 * mistral-run: the offline runner.  Loads a GGUF model with lib/ directly
 * (no daemon) and generates, tokenizes, dumps logits or measures
 * perplexity.  Its options are a fixed interface used by tests and
 * scripts; see mistral-run(1).
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gguf.h"
#include "kvcache.h"
#include "model.h"
#include "quant.h"
#include "sampler.h"
#include "tokenizer.h"

#define RUN_VERSION PACKAGE_VERSION

struct run_opts {
	const char		*model;
	const char		*prompt;
	const char		*prompt_file;
	const char		*ids;
	const char		*logits_file;
	const char		*ppl_file;
	int64_t			 n_predict;
	int			 no_bos;
	int			 special;
	int			 threads;
	uint32_t		 window;
	int			 chunk;
	uint32_t		 n_global;
	enum kv_type		 kv_type;
	int			 tokenize;
	int			 print_ids;
	int			 info;
	int			 json;
	int			 quiet;
	int			 ctx;
	struct sampler_params	 sp;
};

static const char *run_progname = "mistral-run";

static void
run_usage(FILE *fp)
{
	fprintf(fp,
"usage: mistral-run -m MODEL [-p TEXT | -f FILE | --ids LIST] [-n N] [-t N]\n"
"                   [--no-bos] [--special] [--temp T] [--top-k K] [--top-p P]\n"
"                   [--min-p P] [--repeat-penalty R] [--repeat-last-n N]\n"
"                   [--seed S] [--window W] [--chunk C] [--global G]\n"
"                   [--kv-type f32|f16|q8_0] [--tokenize] [--print-ids]\n"
"                   [--logits FILE] [--perplexity FILE] [--ctx N] [--info]\n"
"                   [--json] [-q] [-h] [--version]\n");
}

static void
run_errx(int status, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", run_progname);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(status);
}

static double
run_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Parse a number option strictly; exits 2 on nonsense. */
static double
run_num(const char *opt, const char *s, double lo, double hi)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno != 0 || end == s || *end != '\0' || !(v >= lo && v <= hi))
		run_errx(2, "%s: bad value '%s' (expected %g to %g)", opt, s,
		    lo, hi);
	return v;
}

static int64_t
run_int(const char *opt, const char *s, int64_t lo, int64_t hi)
{
	char *end;
	long long v;

	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi)
		run_errx(2, "%s: bad value '%s' (expected an integer from %"
		    PRId64 " to %" PRId64 ")", opt, s, lo, hi);
	return v;
}

/* Read a whole file (or stdin for NULL) exactly as it is. */
static char *
run_slurp(const char *path, size_t *len)
{
	FILE *fp = path ? fopen(path, "rb") : stdin;
	size_t cap = 65536, n = 0, r;
	char *buf, *p;

	if (fp == NULL)
		run_errx(1, "%s: %s", path, strerror(errno));
	if ((buf = malloc(cap + 1)) == NULL)
		run_errx(1, "out of memory");
	while ((r = fread(buf + n, 1, cap - n, fp)) > 0) {
		n += r;
		if (n == cap) {
			cap *= 2;
			if ((p = realloc(buf, cap + 1)) == NULL)
				run_errx(1, "out of memory");
			buf = p;
		}
	}
	if (ferror(fp))
		run_errx(1, "%s: read error", path ? path : "stdin");
	if (path)
		fclose(fp);
	buf[n] = '\0';
	*len = n;
	return buf;
}

static int32_t *
run_parse_ids(const char *s, int64_t *n)
{
	int32_t *ids = NULL;
	int64_t cap = 0;
	const char *p = s;
	char *end;
	long v;

	*n = 0;
	while (*p != '\0') {
		errno = 0;
		v = strtol(p, &end, 10);
		if (end == p || errno != 0 || v < 0 || v > INT32_MAX ||
		    (*end != ',' && *end != '\0'))
			run_errx(2, "--ids: expected comma-separated token ids, "
			    "got '%s'", s);
		if (*n == cap) {
			cap = cap ? cap * 2 : 64;
			if ((ids = realloc(ids, cap * sizeof *ids)) == NULL)
				run_errx(1, "out of memory");
		}
		ids[(*n)++] = (int32_t)v;
		p = *end == ',' ? end + 1 : end;
	}
	return ids;
}

static int32_t *
run_tokenize(const struct tokenizer *tok, const char *text, size_t len,
    int flags, int64_t *n)
{
	int64_t need = tokenizer_encode(tok, text, len, flags, NULL, 0);
	int32_t *ids;

	if (need < 0)
		run_errx(1, "tokenizing the prompt failed: %s",
		    strerror((int)-need));
	if ((ids = malloc((size_t)(need + 1) * sizeof *ids)) == NULL)
		run_errx(1, "out of memory");
	*n = tokenizer_encode(tok, text, len, flags, ids, need + 1);
	return ids;
}

static void
run_print_ids(const int32_t *ids, int64_t n, int json)
{
	int64_t i;

	fputs(json ? "[" : "", stdout);
	for (i = 0; i < n; i++)
		printf(json ? "%s%" PRId32 : "%s%" PRId32, i ? (json ? "," :
		    " ") : "", ids[i]);
	fputs(json ? "]\n" : "\n", stdout);
}

/* Write a JSON string literal. */
static void
run_json_str(FILE *fp, const char *s, size_t n)
{
	size_t i;

	fputc('"', fp);
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '"' || c == '\\')
			fprintf(fp, "\\%c", c);
		else if (c == '\n')
			fputs("\\n", fp);
		else if (c == '\t')
			fputs("\\t", fp);
		else if (c == '\r')
			fputs("\\r", fp);
		else if (c < 0x20)
			fprintf(fp, "\\u%04x", c);
		else
			fputc(c, fp);
	}
	fputc('"', fp);
}

static void
run_opts_parse(struct run_opts *o, int argc, char **argv)
{
	enum {
		OPT_IDS = 256, OPT_NO_BOS, OPT_TEMP, OPT_TOP_K, OPT_TOP_P,
		OPT_MIN_P, OPT_REPEAT_PENALTY, OPT_REPEAT_LAST_N, OPT_SEED,
		OPT_WINDOW, OPT_CHUNK, OPT_GLOBAL, OPT_KV_TYPE, OPT_TOKENIZE,
		OPT_PRINT_IDS, OPT_LOGITS, OPT_PERPLEXITY, OPT_CTX, OPT_INFO,
		OPT_JSON, OPT_VERSION, OPT_SPECIAL,
	};
	static const struct option longopts[] = {
		{ "model", required_argument, NULL, 'm' },
		{ "prompt", required_argument, NULL, 'p' },
		{ "file", required_argument, NULL, 'f' },
		{ "n-predict", required_argument, NULL, 'n' },
		{ "threads", required_argument, NULL, 't' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ "ids", required_argument, NULL, OPT_IDS },
		{ "no-bos", no_argument, NULL, OPT_NO_BOS },
		{ "special", no_argument, NULL, OPT_SPECIAL },
		{ "temp", required_argument, NULL, OPT_TEMP },
		{ "top-k", required_argument, NULL, OPT_TOP_K },
		{ "top-p", required_argument, NULL, OPT_TOP_P },
		{ "min-p", required_argument, NULL, OPT_MIN_P },
		{ "repeat-penalty", required_argument, NULL,
		    OPT_REPEAT_PENALTY },
		{ "repeat-last-n", required_argument, NULL, OPT_REPEAT_LAST_N },
		{ "seed", required_argument, NULL, OPT_SEED },
		{ "window", required_argument, NULL, OPT_WINDOW },
		{ "chunk", required_argument, NULL, OPT_CHUNK },
		{ "global", required_argument, NULL, OPT_GLOBAL },
		{ "kv-type", required_argument, NULL, OPT_KV_TYPE },
		{ "tokenize", no_argument, NULL, OPT_TOKENIZE },
		{ "print-ids", no_argument, NULL, OPT_PRINT_IDS },
		{ "logits", required_argument, NULL, OPT_LOGITS },
		{ "perplexity", required_argument, NULL, OPT_PERPLEXITY },
		{ "ctx", required_argument, NULL, OPT_CTX },
		{ "info", no_argument, NULL, OPT_INFO },
		{ "json", no_argument, NULL, OPT_JSON },
		{ "version", no_argument, NULL, OPT_VERSION },
		{ NULL, 0, NULL, 0 },
	};
	long nproc = sysconf(_SC_NPROCESSORS_ONLN);
	int c;

	memset(o, 0, sizeof *o);
	o->n_predict = 128;
	o->threads = nproc > 0 ? (int)nproc : 1;
	o->chunk = 512;
	o->kv_type = KV_TYPE_F16;
	o->ctx = 512;
	sampler_params_default(&o->sp);
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":m:p:f:n:t:qh", longopts,
	    NULL)) != -1) {
		switch (c) {
		case 'm': o->model = optarg; break;
		case 'p': o->prompt = optarg; break;
		case 'f': o->prompt_file = optarg; break;
		case 'n':
			o->n_predict = run_int("-n", optarg, 0, INT64_MAX / 2);
			break;
		case 't':
			o->threads = (int)run_int("-t", optarg, 1, 1024);
			break;
		case 'q': o->quiet = 1; break;
		case 'h': run_usage(stdout); exit(0);
		case OPT_IDS: o->ids = optarg; break;
		case OPT_NO_BOS: o->no_bos = 1; break;
		case OPT_SPECIAL: o->special = 1; break;
		case OPT_TEMP:
			o->sp.temperature = (float)run_num("--temp", optarg, 0,
			    100);
			break;
		case OPT_TOP_K:
			o->sp.top_k = (int32_t)run_int("--top-k", optarg, 0,
			    INT32_MAX);
			break;
		case OPT_TOP_P:
			o->sp.top_p = (float)run_num("--top-p", optarg, 0, 1);
			break;
		case OPT_MIN_P:
			o->sp.min_p = (float)run_num("--min-p", optarg, 0, 1);
			break;
		case OPT_REPEAT_PENALTY:
			o->sp.repeat_penalty = (float)run_num(
			    "--repeat-penalty", optarg, 0.01, 100);
			break;
		case OPT_REPEAT_LAST_N:
			o->sp.repeat_last_n = (int32_t)run_int(
			    "--repeat-last-n", optarg, 0, 1 << 20);
			break;
		case OPT_SEED:
			o->sp.seed = (uint64_t)run_int("--seed", optarg, 0,
			    INT64_MAX);
			break;
		case OPT_WINDOW:
			o->window = (uint32_t)run_int("--window", optarg, 0,
			    1 << 24);
			break;
		case OPT_CHUNK:
			o->chunk = (int)run_int("--chunk", optarg, 1, 65536);
			break;
		case OPT_GLOBAL:
			o->n_global = (uint32_t)run_int("--global", optarg, 0,
			    1 << 20);
			break;
		case OPT_KV_TYPE:
			if (kv_type_parse(optarg, &o->kv_type) != 0)
				run_errx(2, "--kv-type: expected f32, f16 or "
				    "q8_0, got '%s'", optarg);
			break;
		case OPT_TOKENIZE: o->tokenize = 1; break;
		case OPT_PRINT_IDS: o->print_ids = 1; break;
		case OPT_LOGITS: o->logits_file = optarg; break;
		case OPT_PERPLEXITY: o->ppl_file = optarg; break;
		case OPT_CTX:
			o->ctx = (int)run_int("--ctx", optarg, 2, 1 << 20);
			break;
		case OPT_INFO: o->info = 1; break;
		case OPT_JSON: o->json = 1; break;
		case OPT_VERSION:
			printf("mistral-run %s\n", RUN_VERSION);
			exit(0);
		case ':':
			run_errx(2, "option %s needs a value (see --help)",
			    argv[optind - 1]);
			break;
		default:
			run_errx(2, "unknown option '%s' (see --help)",
			    argv[optind - 1]);
		}
	}
	if (optind < argc)
		run_errx(2, "unexpected argument '%s' (see --help)",
		    argv[optind]);
	if (o->model == NULL)
		run_errx(2, "no model given: use -m MODEL.gguf");
	if ((o->prompt != NULL) + (o->prompt_file != NULL) + (o->ids != NULL) >
	    1)
		run_errx(2, "give the prompt only once (-p, -f or --ids)");
}

/* The prompt as token ids, from -p, -f, --ids or stdin. */
static int32_t *
run_prompt(const struct run_opts *o, const struct tokenizer *tok,
    int64_t *n, int *bos_only)
{
	int flags = 0;
	size_t len;
	char *text;
	int32_t *ids;

	*bos_only = 0;
	if (o->ids != NULL) {
		ids = run_parse_ids(o->ids, n);
		if (*n == 0)
			run_errx(2, "--ids: the prompt is empty");
		*bos_only = *n == 1 && ids[0] == tokenizer_bos(tok);
		return ids;
	}
	if (o->prompt != NULL) {
		len = strlen(o->prompt);
		text = strdup(o->prompt);
	} else {
		if (o->prompt_file == NULL && isatty(STDIN_FILENO))
			run_errx(2, "no prompt: use -p TEXT, -f FILE or --ids, "
			    "or pipe the prompt to stdin");
		text = run_slurp(o->prompt_file, &len);
	}
	if (text == NULL)
		run_errx(1, "out of memory");
	if (len == 0 && !o->tokenize)
		run_errx(2, "the prompt is empty (to start from BOS alone, use "
		    "--ids %d)", (int)tokenizer_bos(tok));
	if (!o->no_bos && tokenizer_bos(tok) >= 0)
		flags |= TOKENIZE_ADD_BOS;
	if (o->special)
		flags |= TOKENIZE_SPECIAL;
	ids = run_tokenize(tok, text, len, flags, n);
	free(text);
	return ids;
}

static int
run_tokenize_only(const struct run_opts *o)
{
	struct tokenizer *tok;
	struct gguf_file *g;
	char err[512];
	int32_t *ids;
	int64_t n;
	int bos_only;

	if (gguf_open(o->model, 0, &g, err, sizeof err) != 0 ||
	    tokenizer_load(g, &tok, err, sizeof err) != 0)
		run_errx(1, "%s", err);
	ids = run_prompt(o, tok, &n, &bos_only);
	run_print_ids(ids, n, o->json);
	free(ids);
	tokenizer_free(tok);
	gguf_close(g);
	return 0;
}

static void
run_write_logits(const char *path, const float *logits, int64_t rows,
    int64_t n_vocab)
{
	char tmp[4096];
	FILE *fp;

	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	if ((fp = fopen(tmp, "wb")) == NULL)
		run_errx(1, "%s: %s", tmp, strerror(errno));
	if (fwrite(logits, sizeof(float), (size_t)(rows * n_vocab), fp) !=
	    (size_t)(rows * n_vocab) || fflush(fp) != 0 ||
	    fsync(fileno(fp)) != 0 || fclose(fp) != 0)
		run_errx(1, "%s: write failed: %s", tmp, strerror(errno));
	if (rename(tmp, path) != 0)
		run_errx(1, "%s: %s", path, strerror(errno));
}

static int
run_perplexity(const struct run_opts *o, struct model *m, struct fwd *f,
    struct kvcache *kv)
{
	const struct tokenizer *tok = model_tokenizer(m);
	int64_t n, off, i, count = 0, w;
	uint32_t V = model_hparams(m)->n_vocab;
	double nll = 0.0;
	int32_t *ids, *win;
	float *logits;
	size_t len;
	char *text = run_slurp(o->ppl_file, &len);
	int bos = tokenizer_bos(tok) >= 0 && !o->no_bos;

	ids = run_tokenize(tok, text, len, 0, &n);
	free(text);
	if ((win = malloc((size_t)(o->ctx + 1) * sizeof *win)) == NULL ||
	    (logits = malloc((size_t)(o->ctx + 1) * V * sizeof *logits)) ==
	    NULL)
		run_errx(1, "out of memory");
	for (off = 0; off < n; off += w) {
		w = n - off < o->ctx - bos ? n - off : o->ctx - bos;
		if (bos)
			win[0] = tokenizer_bos(tok);
		memcpy(win + bos, ids + off, (size_t)w * sizeof *win);
		kvcache_reset(kv, 0);
		if (fwd_prefill(f, kv, win, w + bos, o->chunk, 1, logits) != 0)
			run_errx(1, "forward pass failed");
		for (i = 1; i < w + bos; i++) {
			const float *row = logits + (size_t)(i - 1) * V;
			double mx = -INFINITY, s = 0.0;
			uint32_t v;

			for (v = 0; v < V; v++)
				if (row[v] > mx)
					mx = row[v];
			for (v = 0; v < V; v++)
				s += exp(row[v] - mx);
			nll += mx + log(s) - row[win[i]];
			count++;
		}
	}
	if (count == 0)
		run_errx(1, "%s: too few tokens for perplexity", o->ppl_file);
	if (o->json)
		printf("{\"perplexity\":%.6f,\"tokens\":%" PRId64 ",\"ctx\":%d}"
		    "\n", exp(nll / count), count, o->ctx);
	else
		printf("perplexity: %.4f over %" PRId64 " tokens (ctx %d)\n",
		    exp(nll / count), count, o->ctx);
	free(ids);
	free(win);
	free(logits);
	return 0;
}

static int
run_generate(const struct run_opts *o, struct model *m, struct fwd *f,
    struct kvcache *kv, const int32_t *prompt, int64_t n_prompt, int bos_only)
{
	const struct tokenizer *tok = model_tokenizer(m);
	uint32_t V = model_hparams(m)->n_vocab;
	struct tokenizer_decoder dec;
	struct kvcache *seqs[1] = { kv };
	struct sampler *s;
	struct fwd_batch b;
	char buf[256];
	float *logits;
	int64_t i, n_gen = 0;
	int32_t id;
	double t0, t1, t2;
	int len;
	char *out = NULL;
	size_t out_len = 0, out_cap = 0;
	int32_t *gen = NULL;
	const char *finish = "length";

	if ((logits = malloc((size_t)V * sizeof *logits)) == NULL ||
	    (s = sampler_create(&o->sp, (int32_t)V)) == NULL ||
	    (gen = malloc((size_t)(o->n_predict + 1) * sizeof *gen)) == NULL)
		run_errx(1, "out of memory");
	for (i = 0; i < n_prompt; i++)
		sampler_accept(s, prompt[i]);
	tokenizer_decoder_init(&dec, tok, bos_only ? DECODE_STRIP_LEADING : 0);

	t0 = run_now();
	if (fwd_prefill(f, kv, prompt, n_prompt, o->chunk, 0, logits) != 0)
		run_errx(1, "forward pass failed (a token id out of range?)");
	t1 = run_now();
	b.n = 1;
	b.seqs = seqs;
	b.want = NULL;
	while (n_gen < o->n_predict) {
		if ((id = sampler_sample(s, logits)) < 0)
			run_errx(1, "sampling failed");
		if (id == tokenizer_eos(tok)) {
			finish = "stop";
			break;
		}
		sampler_accept(s, id);
		gen[n_gen++] = id;
		if (o->print_ids && !o->json) {
			printf("%s%" PRId32, n_gen > 1 ? " " : "", id);
			fflush(stdout);
		} else if (!o->print_ids) {
			len = tokenizer_decoder_push(&dec, id, buf, sizeof buf);
			if (len > 0 && o->json) {
				if (out_len + (size_t)len > out_cap) {
					out_cap = (out_len + len) * 2;
					out = realloc(out, out_cap);
					if (out == NULL)
						run_errx(1, "out of memory");
				}
				memcpy(out + out_len, buf, (size_t)len);
				out_len += (size_t)len;
			} else if (len > 0) {
				fwrite(buf, 1, (size_t)len, stdout);
				fflush(stdout);
			}
		}
		if (n_gen == o->n_predict)
			break;
		b.tokens = &id;
		if (fwd_run(f, &b, logits) != 1)
			run_errx(1, "forward pass failed");
	}
	len = tokenizer_decoder_flush(&dec, buf, sizeof buf);
	t2 = run_now();
	if (o->json) {
		if (len > 0) {
			out = realloc(out, out_len + (size_t)len);
			if (out == NULL)
				run_errx(1, "out of memory");
			memcpy(out + out_len, buf, (size_t)len);
			out_len += (size_t)len;
		}
		printf("{\"text\":");
		run_json_str(stdout, out ? out : "", out_len);
		printf(",\"ids\":");
		run_print_ids(gen, n_gen, 1);
		printf(",\"finish\":\"%s\",\"prompt_tokens\":%" PRId64
		    ",\"completion_tokens\":%" PRId64 ",\"prefill_ms\":%.1f,"
		    "\"decode_ms\":%.1f}\n", finish, n_prompt, n_gen,
		    (t1 - t0) * 1e3, (t2 - t1) * 1e3);
	} else {
		if (len > 0 && !o->print_ids)
			fwrite(buf, 1, (size_t)len, stdout);
		fputc('\n', stdout);
	}
	fflush(stdout);
	if (!o->quiet && !o->json)
		fprintf(stderr, "\n%s: prompt %" PRId64 " tokens in %.0f ms "
		    "(%.1f tok/s), generated %" PRId64 " tokens in %.0f ms "
		    "(%.1f tok/s), window %u%s\n", run_progname, n_prompt,
		    (t1 - t0) * 1e3, n_prompt / (t1 - t0 + 1e-9), n_gen,
		    (t2 - t1) * 1e3, n_gen / (t2 - t1 + 1e-9),
		    kvcache_params(kv)->window,
		    kvcache_evicted(kv) > 0 ? " (evicting)" : "");
	free(out);
	free(gen);
	free(logits);
	sampler_free(s);
	return 0;
}

int
main(int argc, char **argv)
{
	struct run_opts o;
	struct model *m;
	struct kvcache *kv;
	struct fwd *f;
	struct kv_params kp;
	char err[1024], summary[2048];
	int32_t *prompt = NULL;
	int64_t n_prompt = 0;
	int bos_only = 0, rc, exact;

	run_opts_parse(&o, argc, argv);
	if (o.tokenize)
		return run_tokenize_only(&o);
	if ((rc = model_load(o.model, &m, err, sizeof err)) != 0)
		run_errx(1, "%s", err);

	memset(&kp, 0, sizeof kp);
	kp.window = model_window(m, o.window, 0, &exact);
	kp.n_global = o.n_global;
	kp.type = o.kv_type;
	if (o.info) {
		model_summary(m, kp.window, kp.n_global,
		    kvcache_size_for(m, &kp), summary, sizeof summary);
		if (o.json) {
			const struct model_hparams *hp = model_hparams(m);

			printf("{\"name\":");
			run_json_str(stdout, model_name(m),
			    strlen(model_name(m)));
			printf(",\"architecture\":\"llama\",\"parameters\":%"
			    PRIu64 ",\"file_type\":\"%s\",\"dim\":%u,"
			    "\"layers\":%u,\"heads\":%u,\"kv_heads\":%u,"
			    "\"ffn\":%u,\"vocab\":%u,\"experts\":%u,"
			    "\"experts_used\":%u,\"context\":%u,\"window\":%u,"
			    "\"n_global\":%u,\"mode\":\"%s\",\"kv_bytes\":%zu,"
			    "\"weight_bytes\":%" PRIu64 ",\"fingerprint\":\"%016"
			    PRIx64 "\",\"isa\":\"%s\"}\n", model_n_params(m),
			    model_file_type(m), hp->dim, hp->n_layers,
			    hp->n_heads, hp->n_kv_heads, hp->ffn_dim,
			    hp->n_vocab, hp->n_experts, hp->n_experts_used,
			    hp->ctx_len, kp.window, kp.n_global,
			    exact ? "exact" : "evicting",
			    kvcache_size_for(m, &kp), model_weight_bytes(m),
			    model_fingerprint(m), quant_isa_name(quant_isa()));
		} else {
			fputs(summary, stdout);
			printf("kernels:      %s\n", quant_isa_name(quant_isa()));
		}
		model_free(m);
		return 0;
	}
	if (o.ppl_file == NULL)
		prompt = run_prompt(&o, model_tokenizer(m), &n_prompt,
		    &bos_only);
	if ((rc = kvcache_create(m, &kp, &kv)) != 0)
		run_errx(1, "cannot create a KV cache with window %u, %u "
		    "globals, type %s: %s", kp.window, kp.n_global,
		    kv_type_name(kp.type), strerror(-rc));
	if ((rc = fwd_create(m, o.chunk, o.threads, &f)) != 0)
		run_errx(1, "cannot allocate the forward pass: %s",
		    strerror(-rc));
	if (!o.quiet && !o.json) {
		model_summary(m, kp.window, kp.n_global, kvcache_bytes(kv),
		    summary, sizeof summary);
		fputs(summary, stderr);
	}
	if (o.ppl_file != NULL) {
		rc = run_perplexity(&o, m, f, kv);
		goto out;
	}
	if (o.logits_file != NULL) {
		uint32_t V = model_hparams(m)->n_vocab;
		float *lg = malloc((size_t)n_prompt * V * sizeof *lg);

		if (lg == NULL)
			run_errx(1, "out of memory for %" PRId64 " rows of "
			    "logits", n_prompt);
		if (fwd_prefill(f, kv, prompt, n_prompt, o.chunk, 1, lg) != 0)
			run_errx(1, "forward pass failed (a token id out of "
			    "range?)");
		run_write_logits(o.logits_file, lg, n_prompt, V);
		free(lg);
		rc = 0;
		goto out;
	}
	rc = run_generate(&o, m, f, kv, prompt, n_prompt, bos_only);
out:
	free(prompt);
	fwd_free(f);
	kvcache_free(kv);
	model_free(m);
	return rc;
}
