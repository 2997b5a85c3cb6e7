/*
 * main.c: mistrald's start-up, signals and shutdown.
 *
 * Start: pick OpenBLAS's kernels (re-exec once, see main_blas), read the
 * settings, check the socket path, detach unless --foreground or socket-
 * activated, load the model (or write the demo one), open the session
 * store, start the engine worker, listen, and tell systemd READY=1.
 *
 * SIGTERM/SIGINT: stop accepting, cancel running turns (each is still
 * saved, then gets its response: turn.c DESIGN 4), wait for the
 * persistence thread to commit everything queued, stop the worker, close
 * the connections and exit 0, all within shutdown-timeout seconds (after
 * which the process exits 1; SQLite's journal keeps the database
 * consistent even then).
 * SIGHUP: re-read the settings that can change live and reopen the log.
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mistrald.h"

#define MAIN_REEXEC_ENV	"MISTRALD_BLAS_REEXEC"

struct config	 cfg;
struct model	*model;
uv_loop_t	*loop;
struct engine	*engine;
int		 shutting_down;
int		 model_is_demo;
uint64_t	 start_time_ms;
char		*blas_core;

static int	 main_phase;		/* 1 draining turns, 2 flushing, 3 done */
static int	 main_ready_fd = -1;	/* to the parent when detaching */
static char	*main_log_path;		/* the default log when detached */
static uv_signal_t main_sigterm, main_sigint, main_sighup;
static uv_timer_t main_deadline;

const struct tokenizer *
daemon_tokenizer(void)
{
	return model_tokenizer(model);
}

/*
 * OpenBLAS 0.3.21 falls back to slow Prescott kernels on CPUs it does not
 * know (PLATFORM.md 1c), and reads OPENBLAS_CORETYPE only in its library
 * constructor, before main().  So when the variable is unset, choose a
 * core this CPU really supports (an unknown name would select AVX-512
 * kernels and crash a CPU without them), set it and re-execute ourselves
 * once; MAIN_REEXEC_ENV guards against a loop.
 */
static void
main_blas(char **argv)
{
	const char *core = getenv("OPENBLAS_CORETYPE");

	if (getenv(MAIN_REEXEC_ENV) != NULL) {
		unsetenv(MAIN_REEXEC_ENV);
		if (core != NULL)
			blas_core = xstrdup(core);
		return;
	}
	if (core != NULL) {
		blas_core = xstrdup(core);
		return;
	}
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx512f") &&
	    __builtin_cpu_supports("avx512bw") &&
	    __builtin_cpu_supports("avx512vl"))
		core = "SkylakeX";
	else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
		core = "Haswell";
	else
		return;
	setenv("OPENBLAS_CORETYPE", core, 1);
	if (getenv("OPENBLAS_NUM_THREADS") == NULL)
		setenv("OPENBLAS_NUM_THREADS", "1", 1);
	setenv(MAIN_REEXEC_ENV, "1", 1);
	execv("/proc/self/exe", argv);
	/* Could not re-execute: carry on with whatever OpenBLAS chose. */
	unsetenv(MAIN_REEXEC_ENV);
	unsetenv("OPENBLAS_CORETYPE");
}

/*
 * Detach: fork, and have the parent wait until the child is serving (a
 * byte on a pipe) or has failed (end of file), so that "mistrald" returns
 * non-zero when start-up fails.
 */
static void
main_detach(void)
{
	int fds[2], null;
	pid_t pid;
	char c;

	if (pipe2(fds, O_CLOEXEC) != 0)
		fatal("main_detach: pipe");
	if ((pid = fork()) == -1)
		fatal("main_detach: fork");
	if (pid > 0) {
		close(fds[1]);
		_exit(read(fds[0], &c, 1) == 1 ? 0 : 1);
	}
	close(fds[0]);
	main_ready_fd = fds[1];
	setsid();
	if ((null = open("/dev/null", O_RDWR | O_CLOEXEC)) != -1) {
		dup2(null, STDIN_FILENO);
		dup2(null, STDOUT_FILENO);
		close(null);
	}
}

static void
main_close_cb(uv_handle_t *h)
{
}

/* The persistence thread has committed (or tried) everything. */
static void
main_flushed(void *arg)
{
	if (main_phase != 2)
		return;
	main_phase = 3;
	engine_stop(engine);
	engine = NULL;
	server_close_clients();
	residency_close();
	watch_stop();
	uv_close((uv_handle_t *)&main_sigterm, main_close_cb);
	uv_close((uv_handle_t *)&main_sigint, main_close_cb);
	uv_close((uv_handle_t *)&main_sighup, main_close_cb);
	uv_close((uv_handle_t *)&main_deadline, main_close_cb);
	log_info("shutdown complete");
}

/* Called whenever a turn or a client goes: move the shutdown on. */
void
daemon_shutdown_check(void)
{
	if (main_phase != 1 || !TAILQ_EMPTY(&turns))
		return;
	main_phase = 2;
	sd_notifyf("STATUS=saving sessions");
	residency_flush(main_flushed, NULL);
}

static void
main_deadline_cb(uv_timer_t *t)
{
	log_warnx("shutdown did not finish within %u s; exiting now (stored "
	    "sessions stay consistent, the last turns may be lost)",
	    cfg.shutdown_timeout);
	_exit(1);
}

static void
main_shutdown(void)
{
	if (shutting_down) {
		log_info("already shutting down");
		return;
	}
	shutting_down = 1;
	main_phase = 1;
	log_info("shutting down: cancelling running turns");
	sd_notifyf("STOPPING=1\nSTATUS=shutting down");
	server_close();
	uv_timer_start(&main_deadline, main_deadline_cb,
	    (uint64_t)cfg.shutdown_timeout * 1000, 0);
	uv_unref((uv_handle_t *)&main_deadline);
	turn_cancel_all();
	daemon_shutdown_check();
}

/* Check the settings main.c interprets itself.  Exits on a bad one. */
static void
main_check_config(void)
{
	enum chat_template tmpl;
	enum kv_type kt;

	if (kv_type_parse(cfg.kv_type, &kt) != 0)
		fatalx("kv-type: bad value \"%s\" (f32, f16 or q8_0)",
		    cfg.kv_type);
	if (strcmp(cfg.template, "auto") != 0 &&
	    chat_template_parse(cfg.template, &tmpl) != 0)
		fatalx("template: bad value \"%s\" (auto, raw, mistral, "
		    "llama2 or chatml)", cfg.template);
}

static void
main_reload(void)
{
	char *cause = NULL;

	sd_notifyf("RELOADING=1\nSTATUS=reloading");
	if (config_reload(&cfg, &cause) != 0) {
		log_warnx("reload failed, keeping the running settings: %s",
		    cause);
		free(cause);
	} else
		log_info("settings reloaded");
	if (log_open(cfg.log_level, cfg.log_file != NULL ? cfg.log_file :
	    main_log_path) != 0)
		log_warn("reopening the log %s", cfg.log_file != NULL ?
		    cfg.log_file : main_log_path);
	sd_notifyf("READY=1\nSTATUS=serving");
}

static void
main_signal_cb(uv_signal_t *h, int signum)
{
	if (signum == SIGHUP)
		main_reload();
	else
		main_shutdown();
}

int
main(int argc, char **argv)
{
	char *cause = NULL, *demo = NULL, summary[1024];
	const char *path;
	int rc, threads, activated;
	char err[512];

	main_blas(argv);
	if (config_load(&cfg, argc, argv, &cause) != 0) {
		fprintf(stderr, "mistrald: %s\n", cause);
		free(cause);
		config_usage(stderr);
		return 1;
	}
	if (log_open(cfg.log_level, cfg.log_file != NULL ? cfg.log_file :
	    NULL) != 0)
		fatal("cannot open the log %s", cfg.log_file);
	main_check_config();
	signal(SIGPIPE, SIG_IGN);
	/* Over a file-size limit, a write must fail with EFBIG (reported
	 * and retried like a full disk), not kill the daemon. */
	signal(SIGXFSZ, SIG_IGN);
	start_time_ms = now_ms();

	activated = getenv("LISTEN_FDS") != NULL;
	if (!activated && server_check_path(cfg.socket, &cause) != 0)
		fatalx("%s", cause);
	/* Socket-activated, the process systemd started must be the one that
	 * serves: a detached child would not match LISTEN_PID, and the
	 * service manager would lose track of it.  It logs to standard error
	 * (the journal) then, as with --foreground. */
	if (!cfg.foreground && !activated) {
		if (mkdir(cfg.state_dir, 0700) != 0 && errno != EEXIST)
			fatal("mkdir %s", cfg.state_dir);
		xasprintf(&main_log_path, "%s/mistrald.log", cfg.state_dir);
		if (cfg.log_file == NULL && log_open(cfg.log_level,
		    main_log_path) != 0)
			fatal("cannot open the log %s", main_log_path);
		main_detach();
	}
	log_info("mistrald %s starting (pid %d); OpenBLAS kernels: %s",
	    PACKAGE_VERSION, (int)getpid(), blas_core != NULL ? blas_core :
	    "chosen by OpenBLAS");

	path = cfg.model;
	if (path == NULL || *path == '\0') {
		if (demo_model_path(cfg.state_dir, &demo, &cause) != 0)
			fatalx("%s", cause);
		path = demo;
		model_is_demo = 1;
	}
	sd_notifyf("EXTEND_TIMEOUT_USEC=600000000\nSTATUS=loading %s", path);
	if ((rc = model_load(path, &model, err, sizeof err)) != 0)
		fatalx("%s", err);
	if (model_is_demo)
		log_warnx("NO MODEL GIVEN: serving %s, a tiny model with RANDOM "
		    "WEIGHTS whose replies are noise; start mistrald with -m "
		    "FILE.gguf for real use", path);
	model_summary(model, 0, 0, 0, summary, sizeof summary);
	for (char *line = strtok(summary, "\n"); line != NULL;
	    line = strtok(NULL, "\n"))
		log_info("model: %s", line);

	loop = uv_default_loop();
	watch_start(loop, path);
	free(demo);
	if (residency_open(loop, &cause) != 0)
		fatalx("session store in %s: %s", cfg.state_dir, cause);
	threads = cfg.threads > 0 ? (int)cfg.threads :
	    (int)uv_available_parallelism();
	if (engine_start(loop, model, threads, (int)cfg.chunk, turn_engine_cb,
	    NULL, &engine, &cause) != 0)
		fatalx("%s", cause);
	log_info("engine: %d compute threads, %u tokens per step, KV budget "
	    "%llu MiB", threads, cfg.chunk,
	    (unsigned long long)(cfg.kv_budget >> 20));
	if (server_listen(loop, &cause) != 0)
		fatalx("%s", cause);

	uv_signal_init(loop, &main_sigterm);
	uv_signal_start(&main_sigterm, main_signal_cb, SIGTERM);
	uv_signal_init(loop, &main_sigint);
	uv_signal_start(&main_sigint, main_signal_cb, SIGINT);
	uv_signal_init(loop, &main_sighup);
	uv_signal_start(&main_sighup, main_signal_cb, SIGHUP);
	uv_timer_init(loop, &main_deadline);

	sd_notifyf("READY=1\nSTATUS=serving %s", model_name(model));
	if (main_ready_fd != -1) {
		(void)!write(main_ready_fd, "", 1);
		close(main_ready_fd);
		main_ready_fd = -1;
	}
	uv_run(loop, UV_RUN_DEFAULT);

	uv_loop_close(loop);
	while (!TAILQ_EMPTY(&sessions))
		session_remove(TAILQ_FIRST(&sessions));
	model_free(model);
	free(blas_core);
	free(main_log_path);
	config_free(&cfg);
	return 0;
}
