/*
 * demo.c: the demo model used when no model is configured.
 *
 * README's quick start runs mistrald with no arguments; so that a new
 * user sees the whole loop (socket, sessions, streaming) before fetching
 * gigabytes, the daemon then writes a tiny model with random weights into
 * its state directory, named so nobody mistakes it for a real one, and
 * serves that.  Its replies are noise; the log and hello say so.
 */
#include <sys/stat.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mistrald.h"
#include "mkmodel.h"

/*
 * The demo model's path in dir, created if missing.  Returns 0, or -1
 * with cause.
 */
int
demo_model_path(const char *dir, char **path, char **cause)
{
	struct mkmodel_params p;
	char err[512];
	int rc;

	xasprintf(path, "%s/%s", dir, MISTRALD_DEMO_MODEL);
	if (access(*path, R_OK) == 0)
		return 0;
	if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
		xasprintf(cause, "mkdir %s: %s", dir, strerror(errno));
		return -1;
	}
	mkmodel_defaults(&p);
	p.name = "mistrald demo (random weights)";
	p.seed = 20240601;
	if ((rc = mkmodel_write(&p, *path, err, sizeof err)) != 0) {
		xasprintf(cause, "writing the demo model: %s", err);
		return -1;
	}
	log_info("wrote a demo model with random weights to %s", *path);
	return 0;
}
