/*
 * repipe.c - pipe links stay consistent when a destination changes source.
 *
 * Re-piping into a destination whose old source is still aborting once
 * left the new source pointing at the destination after it was freed
 * (found in review; ASan saw the use after free).  Here: pipe A -> D,
 * abort A, pipe B -> D while A is still dying, let A finish, abort D, and
 * then data arriving on B must come to the application as DATA (its pipe
 * is gone) instead of into freed memory.  Every buffer returns; no leak.
 */
#include "helpers.h"

#include <string.h>
#include <unistd.h>

struct st {
	ub_conn *a, *b, *d;
	int closed_a, closed_d, data_b;
	size_t bytes_b;
};

static void on_ev(const ub_event *ev, void *arg)
{
	struct st *s = arg;

	switch (ev->type) {
	case UB_EV_CLOSED:
		if (ev->conn == s->a)
			s->closed_a++;
		if (ev->conn == s->d)
			s->closed_d++;
		break;
	case UB_EV_DATA:
		CHECK(ev->conn == s->b);
		s->data_b++;
		s->bytes_b += ub_buf_len(ev->buf);
		CHECK(!memcmp(ub_buf_data(ev->buf), "hello", 5));
		CHECK_OK(ub_buf_release(ev->buf));
		break;
	default:
		break;
	}
}

static int done_a(void *arg) { return ((struct st *)arg)->closed_a ? TH_DONE : TH_IDLE; }
static int done_d(void *arg) { return ((struct st *)arg)->closed_d ? TH_DONE : TH_IDLE; }
static int done_b(void *arg) { return ((struct st *)arg)->bytes_b == 5 ? TH_DONE : TH_IDLE; }

int main(void)
{
	int s1[2], s2[2], s3[2], err = 0;
	struct st s;
	ub_loop *loop;

	th_init("repipe");
	loop = th_loop_new(NULL);
	memset(&s, 0, sizeof(s));
	th_socketpair(s1);
	th_socketpair(s2);
	th_socketpair(s3);
	s.a = ub_conn_adopt(loop, s1[0], NULL, &err);
	CHECK_PTR(s.a, err);
	s.d = ub_conn_adopt(loop, s2[0], NULL, &err);
	CHECK_PTR(s.d, err);
	s.b = ub_conn_adopt(loop, s3[0], NULL, &err);
	CHECK_PTR(s.b, err);
	th_run_for(loop, on_ev, NULL, &s, 5, 20); /* receives armed */

	CHECK_OK(ub_conn_pipe(s.a, s.d));
	CHECK_OK(ub_conn_abort(s.a));
	/* A is dying but not gone: D changes source anyway. */
	CHECK_OK(ub_conn_pipe(s.b, s.d));
	th_run(loop, on_ev, done_a, &s, 5, TH_TIMEOUT_MS, "A closed");
	CHECK_OK(ub_conn_abort(s.d));
	th_run(loop, on_ev, done_d, &s, 5, TH_TIMEOUT_MS, "D closed");
	th_run_for(loop, on_ev, NULL, &s, 5, 20); /* D is freed here */

	CHECK_EQ(write(s3[1], "hello", 5), 5);
	th_run(loop, on_ev, done_b, &s, 5, TH_TIMEOUT_MS,
	       "B's data as DATA once its pipe's destination is gone");
	CHECK_EQ(s.data_b, 1);
	CHECK_OK(ub_conn_close(s.b));
	CHECK_OK(ub_loop_free(loop));
	close(s1[1]);
	close(s2[1]);
	close(s3[1]);
	printf("repipe: ok\n");
	return th_finish();
}
