/*
 * inert_plugin.c - a uWSGI plugin that does nothing, for the spawn
 * benchmarks: another .so loaded into the master and its workers, with an
 * (empty) post_fork hook, the floor a plugin's mere presence costs a spawn.
 */
#include <uwsgi.h>

static void inert_post_fork(void)
{
}

/* uWSGI calls post_fork only for request plugins; a request for modifier1
 * 151 is refused. */
static int inert_request(struct wsgi_request *wsgi_req)
{
    return -1;
}

struct uwsgi_plugin inert_plugin = {
    .name = "inert",
    .modifier1 = 151,
    .request = inert_request,
    .post_fork = inert_post_fork,
};
