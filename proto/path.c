/*
 * path.c: where the daemon's socket is, shared by daemon and client so
 * that both agree without configuration.
 */
#include <sys/socket.h>
#include <sys/un.h>

#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "protocol.h"

#define PATH_SUN_MAX	sizeof(((struct sockaddr_un *)0)->sun_path)

/* The result of snprintf(buf, cap, ...) as 0 or -ENAMETOOLONG. */
static int
path_check(size_t cap, int n)
{
	if (n < 0 || (size_t)n >= cap || (size_t)n >= PATH_SUN_MAX)
		return -ENAMETOOLONG;
	return 0;
}

/*
 * A user's own daemon: $XDG_RUNTIME_DIR/mistrald/mistrald.sock, or, with
 * no runtime directory (no login session), next to the daemon's default
 * state: $XDG_STATE_HOME/mistrald/ or ~/.local/state/mistrald/.  The
 * daemon's defaults (daemon/config.c) follow the same rule.
 */
int
proto_socket_user(char *buf, size_t cap)
{
	const char	*xdg = getenv("XDG_RUNTIME_DIR");
	const char	*state = getenv("XDG_STATE_HOME");
	const char	*home = getenv("HOME");
	struct passwd	*pw;

	if (xdg != NULL && xdg[0] == '/')
		return path_check(cap,
		    snprintf(buf, cap, "%s/%s", xdg, PROTO_SOCKET_USER));
	if (state != NULL && state[0] == '/')
		return path_check(cap,
		    snprintf(buf, cap, "%s/%s", state, PROTO_SOCKET_STATE));
	if (home == NULL || *home == '\0') {
		pw = getpwuid(getuid());
		home = pw != NULL ? pw->pw_dir : "/";
	}
	return path_check(cap, snprintf(buf, cap, "%s/.local/state/%s", home,
	    PROTO_SOCKET_STATE));
}

int
proto_socket_path(char *buf, size_t cap)
{
	const char	*env = getenv(PROTO_SOCKET_ENV);

	if (env != NULL && *env != '\0')
		return path_check(cap, snprintf(buf, cap, "%s", env));
	if (proto_socket_user(buf, cap) == 0 && access(buf, F_OK) == 0)
		return 0;
	return path_check(cap,
	    snprintf(buf, cap, "%s", PROTO_SOCKET_SYSTEM));
}
