/*
 * handle.c - when connections, listeners and datagram endpoints are freed:
 * libuv's handle model (a handle lives until the application lets go of it
 * after its close callback).
 *
 * Owns: the common head (struct ub_handle, internal.h) and its hold count;
 * the loop's lists of REPORTED objects (loop->zombies) and of GONE objects
 * still held (loop->held).
 * Invariants: an object's socket, rings and pool references are released
 * when it closes, once the kernel holds nothing of it (conn.c, listener.c,
 * dgram.c); only its struct is left.  That struct is freed when the wait
 * after the one that returned its CLOSED event starts (or its loop is
 * freed) and nobody holds it, whichever comes last; so an application that
 * never holds sees what it always did.  A GONE object fails every
 * operation (its closed flag is set) and never touches its loop, which it
 * forgets (NULL) when the loop is freed.  No work per wait for objects held
 * long after they closed: the last release frees at once.
 */
#include "internal.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>

static int hold(struct ub_handle *h)
{
	if (h->holds == UINT_MAX)
		return -EOVERFLOW;
	h->holds++;
	return 0;
}

static void release(struct ub_handle *h)
{
	if (!h->holds || --h->holds || h->life != UB_LIFE_GONE)
		return;
	ub__list_del(&h->link); /* loop->held, or itself once detached */
	if (!h->leak)
		free(h); /* the head is first: this is the object's block */
}

static int is_closed(const struct ub_handle *h)
{
	return h->life == UB_LIFE_GONE;
}

/* GONE: freed, or kept on list (loop->held; NULL: detached) for its
 * holders. */
static void gone(struct ub_handle *h, struct ub_list *list)
{
	ub__list_del(&h->link);
	h->life = UB_LIFE_GONE;
	if (h->holds) {
		if (list)
			ub__list_add_tail(list, &h->link);
	} else if (!h->leak) {
		free(h);
	}
}

void ub__handle_reported(ub_loop *loop, struct ub_handle *h)
{
	ub__list_del(&h->link);
	ub__list_add_tail(&loop->zombies, &h->link);
	h->life = UB_LIFE_REPORTED;
}

void ub__handles_reap(ub_loop *loop)
{
	while (!ub__list_empty(&loop->zombies))
		gone(ub__container_of(loop->zombies.next, struct ub_handle,
				      link),
		     &loop->held);
}

void ub__handle_detach(struct ub_handle *h, bool leak)
{
	/* Every operation checks closed first (or the loop it would use):
	 * set both before the holders can call anything again. */
	switch (h->kind) {
	case UB_KIND_CONN: {
		ub_conn *c = ub__container_of(h, ub_conn, obj.h);

		c->closed = true;
		c->loop = NULL;
		break;
	}
	case UB_KIND_LISTENER: {
		ub_listener *l = ub__container_of(h, ub_listener, h);

		l->closed = true;
		l->loop = NULL;
		break;
	}
	case UB_KIND_DGRAM: {
		ub_dgram *d = ub__container_of(h, ub_dgram, obj.h);

		d->closed = true;
		d->loop = NULL;
		break;
	}
	default:
		break;
	}
	h->leak = leak;
	gone(h, NULL);
}

/* ---- public API: thin wrappers, one family per kind ---- */

int ub_conn_hold(ub_conn *c) { return c ? hold(&c->obj.h) : -EINVAL; }
void ub_conn_release(ub_conn *c) { if (c) release(&c->obj.h); }
int ub_conn_is_closed(const ub_conn *c) { return c ? is_closed(&c->obj.h) : -EINVAL; }

int ub_listener_hold(ub_listener *l) { return l ? hold(&l->h) : -EINVAL; }
void ub_listener_release(ub_listener *l) { if (l) release(&l->h); }
int ub_listener_is_closed(const ub_listener *l) { return l ? is_closed(&l->h) : -EINVAL; }

int ub_dgram_hold(ub_dgram *d) { return d ? hold(&d->obj.h) : -EINVAL; }
void ub_dgram_release(ub_dgram *d) { if (d) release(&d->obj.h); }
int ub_dgram_is_closed(const ub_dgram *d) { return d ? is_closed(&d->obj.h) : -EINVAL; }
