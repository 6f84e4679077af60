/*
 * test_redact.c - what may be printed of a setting: secret-looking keys,
 * URL userinfo and NAME=VALUE passwords.
 */
#include <string.h>

#include "unit.h"

START_TEST(secret_keys)
{
    ck_assert(forksafe__is_secret_key("db.password"));
    ck_assert(forksafe__is_secret_key("SECRET"));
    ck_assert(forksafe__is_secret_key("auth.tktSecret"));
    ck_assert(forksafe__is_secret_key("api_token"));
    ck_assert(forksafe__is_secret_key("session.key"));
    ck_assert(forksafe__is_secret_key("aws.Credentials"));
    ck_assert(!forksafe__is_secret_key("sqlalchemy.url"));
    ck_assert(!forksafe__is_secret_key("pyramid.reload_templates"));
    ck_assert(!forksafe__is_secret_key(""));
}
END_TEST

static void assert_redacted(const char *key, const char *value, const char *expected)
{
    char *shown = forksafe__redact(key, value);

    ck_assert_ptr_nonnull(shown);
    ck_assert_str_eq(shown, expected);
    forksafe__free(shown);
}

START_TEST(redaction)
{
    assert_redacted("session.secret", "hunter2", "***");
    assert_redacted("sqlalchemy.url", "postgresql://app:hunter2@db:5432/app",
                    "postgresql://app:***@db:5432/app");
    /* Without a password, the user name may be the token itself. */
    assert_redacted("sqlalchemy.url", "postgresql://app@db/app", "postgresql://***@db/app");
    assert_redacted("repo", "https://ghp_abc123@github.com/o/r.git",
                    "https://***@github.com/o/r.git");
    assert_redacted("page", "https://example.com/users/@alice", "https://example.com/users/@alice");
    assert_redacted("page", "https://example.com?u=@alice", "https://example.com?u=@alice");
    assert_redacted("sqlalchemy.url", "sqlite:///%(here)s/app.db", "sqlite:///%(here)s/app.db");
    assert_redacted("cache", "redis://:pw@localhost:6379/0", "redis://:***@localhost:6379/0");
    assert_redacted("url", "mysql://u:p@ss:w/rd@h/db", "mysql://u:***@h/db");
    assert_redacted("urls", "http://a:1@x\nhttp://b:2@y", "http://a:***@x\nhttp://b:***@y");
    assert_redacted("site", "http://example.com:8080/path", "http://example.com:8080/path");
    assert_redacted("site", "mailto:someone@example.com", "mailto:someone@example.com");
    assert_redacted("site", "://a:b@c", "://a:b@c");
    assert_redacted("x", "", "");
    assert_redacted("ldap.bindpasswd", "x", "***");
    /* libpq keyword DSNs and query parameters with secret-looking names. */
    assert_redacted("db.dsn", "host=db user=app password=hunter2 dbname=app",
                    "host=db user=app password=*** dbname=app");
    assert_redacted("url", "postgresql://db/app?sslmode=require&password=hunter2&x=1",
                    "postgresql://db/app?sslmode=require&password=***&x=1");
    assert_redacted("url", "https://h/cb?access_token=abc;api_key=def",
                    "https://h/cb?access_token=***;api_key=***");
    assert_redacted("url", "postgresql://u:p@h/db?password=q",
                    "postgresql://u:***@h/db?password=***");
    assert_redacted("note", "password= keyring=x a_token=", "password= keyring=*** a_token=");
    assert_redacted("note", "mypassword=x", "mypassword=***");
    assert_redacted("note", "sqlpassword==x", "sqlpassword=***");
    assert_redacted("note", "t=1 monkey=banana key", "t=1 monkey=*** key");
}
END_TEST

Suite *unit_suite(void)
{
    Suite *suite = suite_create("redact");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, secret_keys);
    tcase_add_test(tc, redaction);
    suite_add_tcase(suite, tc);
    return suite;
}
