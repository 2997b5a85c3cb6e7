/*
 * mkmodel: write a random llama-architecture GGUF model, for tests and
 * benchmarks.  A thin command line over mkmodel_write() in lib/mkmodel.c.
 *
 *	mkmodel -o PATH [--dim N] [--layers N] [--heads N] [--kv-heads N]
 *	    [--ffn N] [--experts N] [--experts-used N] [--vocab N] [--ctx N]
 *	    [--window N] [--type TYPE] [--output-type TYPE] [--split-experts]
 *	    [--tied] [--seed N] [--name S] [--vocab-from GGUF]
 *	    [--rope-base F] [--rms-eps F]
 *
 * TYPE is f32, f16, bf16, q8_0, q4_0, q4_k, q5_k, q6_k, q4_k_m or q5_k_m.
 * Exit status: 0 written, 1 failed, 2 usage.
 */

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mkmodel.h"

static const char *mkmodel_prog = "mkmodel";

static void __attribute__((noreturn))
mkmodel_usage(const char *why)
{
	if (why != NULL)
		fprintf(stderr, "%s: %s\n", mkmodel_prog, why);
	fprintf(stderr, "usage: %s -o PATH [--dim N] [--layers N] [--heads N] "
	    "[--kv-heads N] [--ffn N] [--experts N] [--experts-used N] "
	    "[--vocab N] [--ctx N] [--window N] [--type TYPE] "
	    "[--output-type TYPE] [--split-experts] [--tied] [--seed N] "
	    "[--name S] [--vocab-from GGUF] [--rope-base F] [--rms-eps F]\n",
	    mkmodel_prog);
	exit(2);
}

static uint64_t
mkmodel_number(const char *opt, const char *s, uint64_t max)
{
	char			*end;
	unsigned long long	 v;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (*s == '\0' || *s == '-' || *end != '\0' || errno != 0 || v > max) {
		fprintf(stderr, "%s: --%s: bad number '%s'\n", mkmodel_prog,
		    opt, s);
		exit(2);
	}
	return v;
}

static float
mkmodel_float(const char *opt, const char *s)
{
	char	*end;
	float	 v;

	errno = 0;
	v = strtof(s, &end);
	if (*s == '\0' || *end != '\0' || errno != 0) {
		fprintf(stderr, "%s: --%s: bad number '%s'\n", mkmodel_prog,
		    opt, s);
		exit(2);
	}
	return v;
}

/* Parse a type name; *mix is set for the _K_M names. */
static enum ggml_type
mkmodel_type(const char *opt, const char *s, int *mix)
{
	static const struct {
		const char	*name;
		enum ggml_type	 type;
		int		 mix;
	} types[] = {
		{ "f32", GGML_TYPE_F32, 0 },
		{ "f16", GGML_TYPE_F16, 0 },
		{ "bf16", GGML_TYPE_BF16, 0 },
		{ "q8_0", GGML_TYPE_Q8_0, 0 },
		{ "q4_0", GGML_TYPE_Q4_0, 0 },
		{ "q4_k", GGML_TYPE_Q4_K, 0 },
		{ "q5_k", GGML_TYPE_Q5_K, 0 },
		{ "q6_k", GGML_TYPE_Q6_K, 0 },
		{ "q4_k_m", GGML_TYPE_Q4_K, 1 },
		{ "q5_k_m", GGML_TYPE_Q5_K, 1 },
	};
	size_t	i;

	for (i = 0; i < sizeof types / sizeof *types; i++) {
		if (strcasecmp(s, types[i].name) == 0 &&
		    (mix != NULL || !types[i].mix)) {
			if (mix != NULL)
				*mix = types[i].mix;
			return types[i].type;
		}
	}
	fprintf(stderr, "%s: --%s: unknown type '%s'\n", mkmodel_prog, opt, s);
	exit(2);
}

int
main(int argc, char **argv)
{
	enum {
		OPT_DIM = 256, OPT_LAYERS, OPT_HEADS, OPT_KV_HEADS, OPT_FFN,
		OPT_EXPERTS, OPT_EXPERTS_USED, OPT_VOCAB, OPT_CTX, OPT_WINDOW,
		OPT_TYPE, OPT_OUTPUT_TYPE, OPT_SPLIT, OPT_TIED, OPT_SEED,
		OPT_NAME, OPT_VOCAB_FROM, OPT_ROPE_BASE, OPT_RMS_EPS,
	};
	static const struct option longopts[] = {
		{ "output", required_argument, NULL, 'o' },
		{ "dim", required_argument, NULL, OPT_DIM },
		{ "layers", required_argument, NULL, OPT_LAYERS },
		{ "heads", required_argument, NULL, OPT_HEADS },
		{ "kv-heads", required_argument, NULL, OPT_KV_HEADS },
		{ "ffn", required_argument, NULL, OPT_FFN },
		{ "experts", required_argument, NULL, OPT_EXPERTS },
		{ "experts-used", required_argument, NULL, OPT_EXPERTS_USED },
		{ "vocab", required_argument, NULL, OPT_VOCAB },
		{ "ctx", required_argument, NULL, OPT_CTX },
		{ "window", required_argument, NULL, OPT_WINDOW },
		{ "type", required_argument, NULL, OPT_TYPE },
		{ "output-type", required_argument, NULL, OPT_OUTPUT_TYPE },
		{ "split-experts", no_argument, NULL, OPT_SPLIT },
		{ "tied", no_argument, NULL, OPT_TIED },
		{ "seed", required_argument, NULL, OPT_SEED },
		{ "name", required_argument, NULL, OPT_NAME },
		{ "vocab-from", required_argument, NULL, OPT_VOCAB_FROM },
		{ "rope-base", required_argument, NULL, OPT_ROPE_BASE },
		{ "rms-eps", required_argument, NULL, OPT_RMS_EPS },
		{ NULL, 0, NULL, 0 },
	};
	struct mkmodel_params	 p;
	const char		*path = NULL;
	char			 err[512];
	int			 c, rc;

	if (argc > 0 && argv[0] != NULL) {
		const char *slash = strrchr(argv[0], '/');
		mkmodel_prog = slash != NULL ? slash + 1 : argv[0];
	}
	mkmodel_defaults(&p);
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":o:", longopts, NULL)) != -1) {
		switch (c) {
		case 'o':
			path = optarg;
			break;
		case OPT_DIM:
			p.dim = mkmodel_number("dim", optarg, UINT32_MAX);
			break;
		case OPT_LAYERS:
			p.n_layers = mkmodel_number("layers", optarg,
			    UINT32_MAX);
			break;
		case OPT_HEADS:
			p.n_heads = mkmodel_number("heads", optarg, UINT32_MAX);
			break;
		case OPT_KV_HEADS:
			p.n_kv_heads = mkmodel_number("kv-heads", optarg,
			    UINT32_MAX);
			break;
		case OPT_FFN:
			p.ffn_dim = mkmodel_number("ffn", optarg, UINT32_MAX);
			break;
		case OPT_EXPERTS:
			p.n_experts = mkmodel_number("experts", optarg,
			    UINT32_MAX);
			break;
		case OPT_EXPERTS_USED:
			p.n_experts_used = mkmodel_number("experts-used",
			    optarg, UINT32_MAX);
			break;
		case OPT_VOCAB:
			p.n_vocab = mkmodel_number("vocab", optarg, UINT32_MAX);
			break;
		case OPT_CTX:
			p.ctx_len = mkmodel_number("ctx", optarg, UINT32_MAX);
			break;
		case OPT_WINDOW:
			p.sliding_window = mkmodel_number("window", optarg,
			    UINT32_MAX);
			break;
		case OPT_TYPE:
			p.type = mkmodel_type("type", optarg, &p.q4_k_m_mix);
			break;
		case OPT_OUTPUT_TYPE:
			p.output_type = mkmodel_type("output-type", optarg,
			    NULL);
			break;
		case OPT_SPLIT:
			p.split_experts = 1;
			break;
		case OPT_TIED:
			p.tied_output = 1;
			break;
		case OPT_SEED:
			p.seed = mkmodel_number("seed", optarg, UINT64_MAX);
			break;
		case OPT_NAME:
			p.name = optarg;
			break;
		case OPT_VOCAB_FROM:
			p.vocab_from = optarg;
			break;
		case OPT_ROPE_BASE:
			p.rope_base = mkmodel_float("rope-base", optarg);
			break;
		case OPT_RMS_EPS:
			p.rms_eps = mkmodel_float("rms-eps", optarg);
			break;
		case ':':
			fprintf(stderr, "%s: %s needs an argument\n",
			    mkmodel_prog, argv[optind - 1]);
			exit(2);
		default:
			fprintf(stderr, "%s: unknown option %s\n", mkmodel_prog,
			    argv[optind - 1]);
			mkmodel_usage(NULL);
		}
	}
	if (optind != argc)
		mkmodel_usage("unexpected arguments");
	if (path == NULL)
		mkmodel_usage("no output path (-o)");

	if ((rc = mkmodel_write(&p, path, err, sizeof err)) != 0) {
		fprintf(stderr, "%s: %s\n", mkmodel_prog, err);
		return 1;
	}
	return 0;
}
