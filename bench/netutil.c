/* netutil.c - see netutil.h. */
#include "netutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

struct addrinfo *bench_resolve(const char *prog, const char *hostport)
{
	struct addrinfo hints, *res = NULL;
	char host[256];
	const char *colon, *h, *port;
	size_t hl;
	int r;

	colon = strrchr(hostport, ':');
	if (!colon || !colon[1]) {
		fprintf(stderr, "%s: --connect wants HOST:PORT, not '%s'\n",
			prog, hostport);
		exit(1);
	}
	h = hostport;
	hl = (size_t)(colon - hostport);
	if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
		h++;
		hl -= 2;
	}
	if (hl >= sizeof(host)) {
		fprintf(stderr, "%s: host name too long\n", prog);
		exit(1);
	}
	memcpy(host, h, hl);
	host[hl] = 0;
	port = colon + 1;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV;
	r = getaddrinfo(host[0] ? host : NULL, port, &hints, &res);
	if (r) {
		fprintf(stderr, "%s: cannot resolve '%s': %s\n", prog,
			hostport, gai_strerror(r));
		exit(1);
	}
	return res;
}
