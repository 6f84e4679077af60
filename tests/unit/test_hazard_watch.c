/*
 * test_hazard_watch.c - the hazard policy every host shares: a pre-fork
 * dispatched with what the child would inherit (a real TCP connection of
 * this process) in its payload, said once per child and generation, not
 * said when allowed or off, counted in the stats, and looked at again
 * after a handler closed it.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hazard_watch.h"
#include "unit.h"

static forksafe__context ctx;
static forksafe__hazard_watch watch;
static int listener = -1, client = -1, accepted = -1;
static int lines_said;
static char last_line[1024];
static char payload_hazards[4096];

static void capture(void *data, int level, const char *message)
{
    (void)data;
    if (level == FORKSAFE__LOG_WARNING && strstr(message, "will inherit")) {
        lines_said++;
        snprintf(last_line, sizeof(last_line), "%s", message);
    }
}

/* A pre-fork handler that notes the payload's hazards, and closes the
 * client end when asked to (the fix, in the master). */
static int close_in_handler;

FORKSAFE_HANDLER_ABI_DECLARE();

int forksafe_test_hazard_handler(const forksafe_event *ev);

int forksafe_test_hazard_handler(const forksafe_event *ev)
{
    const char *json = forksafe_event_payload_json(ev);
    const char *hazards = json ? strstr(json, "\"hazards\"") : NULL;

    snprintf(payload_hazards, sizeof(payload_hazards), "%s", hazards ? hazards : "");
    if (close_in_handler) {
        close(client);
        close(accepted);
        client = accepted = -1;
    }
    return 0;
}

static void connect_pair(void)
{
    struct sockaddr_in address = {.sin_family = AF_INET};
    socklen_t length = sizeof(address);

    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    listener = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(listener, 0);
    ck_assert_int_eq(bind(listener, (struct sockaddr *)&address, sizeof(address)), 0);
    ck_assert_int_eq(listen(listener, 1), 0);
    ck_assert_int_eq(getsockname(listener, (struct sockaddr *)&address, &length), 0);
    client = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_eq(connect(client, (struct sockaddr *)&address, sizeof(address)), 0);
    accepted = accept(listener, NULL, NULL);
    ck_assert_int_ge(accepted, 0);
}

static void setup(void)
{
    forksafe__error err = {0};

    memset(&watch, 0, sizeof(watch));
    lines_said = 0;
    last_line[0] = payload_hazards[0] = '\0';
    close_in_handler = 0;
    ck_assert_int_eq(forksafe__context_init(&ctx, capture, NULL), 0);
    ck_assert_int_eq(
        forksafe__subscribe(&ctx, "pre-fork symbol:forksafe_test_hazard_handler", "test", 1, &err),
        0);
    if (forksafe__context_seal(&ctx, &err) != 0) {
        char message[1200];
        forksafe__error_format(&err, message, sizeof(message));
        ck_abort_msg("%s", message);
    }
    watch.mode = FORKSAFE__HAZARDS_WARN;
    connect_pair();
}

static void teardown(void)
{
    int *fds[] = {&listener, &client, &accepted};
    size_t i;

    for (i = 0; i < sizeof(fds) / sizeof(fds[0]); i++) {
        if (*fds[i] >= 0)
            close(*fds[i]);
        *fds[i] = -1;
    }
    /* claims are the process's: none is left for the next test */
    for (i = 0; i < 1024; i++)
        forksafe__hazard_unclaim((int)i);
    forksafe__hazard_watch_free(&watch);
    forksafe__context_free(&ctx);
}

static int pre_fork(int child_id, int generation)
{
    forksafe__process child = {.kind = FORKSAFE__WORKER, .id = child_id};
    forksafe__occurrence occ = {.type = FORKSAFE_PRE_FORK, .child = &child};
    int hazards = -1;

    occ.self.kind = FORKSAFE__MASTER;
    occ.self.pid = getpid();
    occ.generation = generation;
    ck_assert_int_eq(forksafe__hazards_dispatch_pre_fork(&watch, &ctx, &occ, &hazards), 0);
    ck_assert_ptr_null(occ.hazards);
    return hazards;
}

/* The client end and the accepted end: both in this process. */
START_TEST(said_once_per_child_and_generation)
{
    char expected[64];

    ck_assert_int_eq(pre_fork(1, 0), 2);
    ck_assert_int_eq(lines_said, 2);
    ck_assert_ptr_nonnull(strstr(last_line, "worker 1 will inherit fd "));
    snprintf(expected, sizeof(expected), "opened by the master (pid %d)", (int)getpid());
    ck_assert_ptr_nonnull(strstr(last_line, expected));
    ck_assert_ptr_nonnull(strstr(payload_hazards, "\"kind\":\"tcp\""));
    ck_assert_ptr_nonnull(strstr(payload_hazards, "\"allowed\":false"));
    /* a respawn of worker 1: nothing new */
    ck_assert_int_eq(pre_fork(1, 0), 2);
    ck_assert_int_eq(lines_said, 2);
    /* worker 2 is told; so is worker 1 after a reload */
    ck_assert_int_eq(pre_fork(2, 0), 2);
    ck_assert_int_eq(lines_said, 4);
    ck_assert_int_eq(pre_fork(1, 1), 2);
    ck_assert_int_eq(lines_said, 6);
    ck_assert_int_eq(ctx.stats->hazards.forks_looked, 4);
    ck_assert_int_eq(ctx.stats->hazards.forks_with_hazards, 4);
    ck_assert_int_eq(ctx.stats->hazards.last, 2);
}
END_TEST

/* A new set is news to a child already told of the old one. */
START_TEST(a_changed_set_is_said_again)
{
    ck_assert_int_eq(pre_fork(1, 0), 2);
    ck_assert_int_eq(lines_said, 2);
    close(accepted);
    accepted = -1;
    /* the peer's end is gone, the client's still looks connected */
    ck_assert_int_eq(pre_fork(1, 0), 1);
    ck_assert_int_eq(lines_said, 3);
}
END_TEST

START_TEST(an_allowed_hazard_is_counted_not_said)
{
    forksafe__error err = {0};

    ck_assert_int_eq(forksafe__hazard_watch_allow(&watch, "tcp:127.0.0.1:*", "test", 2, &err), 0);
    ck_assert_int_eq(pre_fork(1, 0), 0);
    ck_assert_int_eq(lines_said, 0);
    ck_assert_ptr_nonnull(strstr(payload_hazards, "\"allowed\":true"));
    ck_assert_int_eq(ctx.stats->hazards.forks_with_hazards, 0);
    ck_assert_int_eq(ctx.stats->hazards.last_allowed, 2);
    ck_assert_int_eq(forksafe__hazard_watch_allow(&watch, "socket:x", "test.ini", 7, &err),
                     FORKSAFE__EINVAL);
    ck_assert_str_eq(err.source, "test.ini");
    ck_assert_int_eq(err.line, 7);
}
END_TEST

/* A recipe took charge of both ends: handled, in the payload, not said;
 * the claim is seen although no descriptor changed since the last look. */
START_TEST(a_claimed_socket_is_handled_not_said)
{
    ck_assert_int_eq(pre_fork(1, 0), 2);
    ck_assert_int_eq(lines_said, 2);
    ck_assert_int_eq(forksafe__hazard_claim(client, "recipe:test"), 0);
    ck_assert_int_eq(forksafe__hazard_claim(accepted, "recipe:test"), 0);
    ck_assert_int_eq(pre_fork(2, 0), 0);
    ck_assert_int_eq(lines_said, 2);
    ck_assert_ptr_nonnull(strstr(payload_hazards, "\"handled_by\":\"recipe:test\""));
    ck_assert_ptr_null(strstr(payload_hazards, "\"allowed\":false"));
    ck_assert_int_eq(ctx.stats->hazards.last_allowed, 2);
}
END_TEST

/* A claim is for the socket it was made on: the same number, reused by
 * another connection, is a hazard again. */
START_TEST(a_claim_does_not_pass_to_a_reused_number)
{
    struct sockaddr_in address;
    socklen_t length = sizeof(address);
    int other;

    ck_assert_int_eq(forksafe__hazard_claim(client, "recipe:test"), 0);
    ck_assert_int_eq(forksafe__hazard_claim(accepted, "recipe:test"), 0);
    ck_assert_int_eq(pre_fork(1, 0), 0);
    ck_assert_int_eq(getsockname(listener, (struct sockaddr *)&address, &length), 0);
    other = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_eq(connect(other, (struct sockaddr *)&address, sizeof(address)), 0);
    ck_assert_int_eq(dup2(other, client), client);
    close(other);
    other = accept(listener, NULL, NULL);
    ck_assert_int_ge(other, 0);
    /* the new connection's two ends; the old accepted end stays claimed */
    ck_assert_int_eq(pre_fork(1, 0), 2);
    ck_assert_int_eq(lines_said, 2);
    close(other);
}
END_TEST

START_TEST(only_sockets_are_claimed)
{
    int pipe_ends[2];

    ck_assert_int_eq(pipe(pipe_ends), 0);
    ck_assert_int_eq(forksafe__hazard_claim(pipe_ends[0], "recipe:test"), FORKSAFE__EINVAL);
    ck_assert_int_eq(forksafe__hazard_claim(-1, "recipe:test"), FORKSAFE__EINVAL);
    ck_assert_ptr_null(forksafe__hazard_claimed_by(pipe_ends[0]));
    close(pipe_ends[0]);
    close(pipe_ends[1]);
    ck_assert_int_eq(forksafe__hazard_claim(client, "recipe:test"), 0);
    ck_assert_str_eq(forksafe__hazard_claimed_by(client), "recipe:test");
    forksafe__hazard_unclaim(client);
    ck_assert_ptr_null(forksafe__hazard_claimed_by(client));
}
END_TEST

START_TEST(off_looks_for_nothing)
{
    watch.mode = FORKSAFE__HAZARDS_OFF;
    ck_assert_int_eq(pre_fork(1, 0), 0);
    ck_assert_int_eq(lines_said, 0);
    ck_assert_str_eq(payload_hazards, "");
    ck_assert_int_eq(ctx.stats->hazards.forks_looked, 0);
}
END_TEST

/* The handler was told (the payload has them), closed them, and the child
 * inherits nothing: nothing is said. */
START_TEST(a_handler_that_closes_them_clears_them)
{
    close_in_handler = 1;
    ck_assert_int_eq(pre_fork(1, 0), 0);
    ck_assert_ptr_nonnull(strstr(payload_hazards, "\"kind\":\"tcp\""));
    ck_assert_int_eq(lines_said, 0);
}
END_TEST

START_TEST(modes_by_name)
{
    ck_assert_int_eq(forksafe__hazards_mode_from_name("off"), FORKSAFE__HAZARDS_OFF);
    ck_assert_int_eq(forksafe__hazards_mode_from_name("warn"), FORKSAFE__HAZARDS_WARN);
    ck_assert_int_eq(forksafe__hazards_mode_from_name("fail"), FORKSAFE__HAZARDS_FAIL);
    ck_assert_int_eq(forksafe__hazards_mode_from_name("loud"), -1);
    ck_assert_int_eq(forksafe__hazards_mode_from_name(NULL), -1);
}
END_TEST

Suite *unit_suite(void)
{
    Suite *s = suite_create("hazard_watch");
    TCase *tc = tcase_create("watch");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, said_once_per_child_and_generation);
    tcase_add_test(tc, a_changed_set_is_said_again);
    tcase_add_test(tc, an_allowed_hazard_is_counted_not_said);
    tcase_add_test(tc, a_claimed_socket_is_handled_not_said);
    tcase_add_test(tc, a_claim_does_not_pass_to_a_reused_number);
    tcase_add_test(tc, only_sockets_are_claimed);
    tcase_add_test(tc, off_looks_for_nothing);
    tcase_add_test(tc, a_handler_that_closes_them_clears_them);
    tcase_add_test(tc, modes_by_name);
    suite_add_tcase(s, tc);
    return s;
}
