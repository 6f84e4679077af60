/*
 * hazard_claim.c - sockets a handler has taken charge of.  A recipe that
 * makes every child drop what it inherited (recipe:sqlalchemy drops the
 * pool) claims its connections' sockets in the master; the hazard check
 * then counts them as handled, in the payload with "handled_by", instead
 * of telling the user to do what is being done.
 *
 * Per process, as descriptors are.  A claim holds for the socket it was
 * made on (its SO_COOKIE), never for a later socket that reuses the number
 * after the first was closed without a word.  Claims are made and read in
 * the forking process only, so no lock: a worker never claims (a lock held
 * across a fork by another thread would stay held in the child).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "forksafe_internal.h"
#include "hazard.h"

#ifndef SO_COOKIE
#define SO_COOKIE 57
#endif

/* A claim per pooled connection; a pool is rarely larger than a few dozen. */
#define CLAIMS_MAX 256

static struct {
    int fd;
    uint64_t cookie;
    char by[FORKSAFE__HAZARD_BY_MAX];
} claims[CLAIMS_MAX];
static size_t claim_count;
static unsigned claims_version;

static int socket_cookie(int fd, uint64_t *cookie)
{
    socklen_t length = sizeof(*cookie);

    return getsockopt(fd, SOL_SOCKET, SO_COOKIE, cookie, &length) == 0 && length == sizeof(*cookie)
               ? 0
               : -1;
}

/* Drops the claims whose socket is gone (closed, or its number reused). */
static void forget_closed(void)
{
    uint64_t cookie;
    size_t i = 0;

    while (i < claim_count) {
        if (socket_cookie(claims[i].fd, &cookie) != 0 || cookie != claims[i].cookie)
            claims[i] = claims[--claim_count];
        else
            i++;
    }
}

int forksafe__hazard_claim(int fd, const char *by)
{
    uint64_t cookie;
    size_t i;

    if (fd < 0 || !by || socket_cookie(fd, &cookie) != 0)
        return FORKSAFE__EINVAL;
    for (i = 0; i < claim_count && claims[i].fd != fd; i++)
        ;
    /* The same claim again (a recipe claims its pool before every fork)
     * changes nothing, and must not cost the next fork a full scan. */
    if (i < claim_count && claims[i].cookie == cookie && strcmp(claims[i].by, by) == 0)
        return 0;
    if (i == claim_count) {
        if (claim_count == CLAIMS_MAX)
            forget_closed();
        if (claim_count == CLAIMS_MAX)
            return FORKSAFE__ENOMEM;
        claim_count++;
    }
    claims[i].fd = fd;
    claims[i].cookie = cookie;
    snprintf(claims[i].by, sizeof(claims[i].by), "%s", by);
    claims_version++;
    return 0;
}

void forksafe__hazard_unclaim(int fd)
{
    size_t i;

    for (i = 0; i < claim_count; i++) {
        if (claims[i].fd == fd) {
            claims[i] = claims[--claim_count];
            claims_version++;
            return;
        }
    }
}

const char *forksafe__hazard_claimed_by(int fd)
{
    uint64_t cookie;
    size_t i;

    for (i = 0; i < claim_count; i++) {
        if (claims[i].fd == fd)
            return socket_cookie(fd, &cookie) == 0 && cookie == claims[i].cookie ? claims[i].by
                                                                                 : NULL;
    }
    return NULL;
}

unsigned forksafe__hazard_claims_version(void)
{
    return claims_version;
}
