"""Bad input against a real uWSGI with the forksafe plugin, table-driven.

Every case in CASES is a malformed configuration.  Each must make uWSGI exit
with a non-zero status before it forks anything -- no "spawned uWSGI worker"
in the log, nothing recorded by the event recorder (subscribed to every
event), no trace of the post-fork exec: witness -- and the last [forksafe]
line of the log must be "FILE:LINE: what is wrong" naming the file and the
line that holds the mistake.

A case is a dict:
  body      lines added to the [uwsgi] section of uwsgi.ini
  files     {name: bytes or str} written next to uwsgi.ini ("{dir}" etc. are
            substituted in str content); None makes a FIFO, a dict a directory
  extra     text appended to uwsgi.ini after the [uwsgi] section
  expect    regex the error line must match
  at        (file name, marker): the error must name that file and the
            first line holding MARKER (bytes or str); (file name, (marker, N)):
            the Nth such line; or (file name, N): line N
  setup     callable(instance) run before uWSGI starts
  as_nobody run uWSGI as nobody:nogroup (setpriv): the tests run as root,
            and root reads a chmod 000 file
"""

import os
import shutil
import subprocess

from harness import (APP_DIR, BUILD, EMBEDDED, FAILING, PLUGIN_DIR, RECORDER, ROOT, UWSGI,
                     UWSGI_HEAD, IntegrationCase, Uwsgi)

HEAD = UWSGI_HEAD + """wsgi-file = {app_dir}/simple_app.py
forksafe-set = forksafe.event_log={record}
forksafe-subscribe = * dl:{recorder}:record
forksafe-subscribe = post-fork exec:touch {dir}/forked
"""

# PasteDeploy refuses a file with a repeated key in any section, so with
# `paste = config:%p` the witnesses are one directive and [forksafe].
PASTE_HEAD = HEAD.replace("forksafe-subscribe = post-fork exec:touch {dir}/forked\n", "")
PASTE_WITNESS = "\n[forksafe]\npost-fork = exec:touch %(here)s/forked\n"

# forksafe's Python package, where the recipe: handlers live (installed:
# python3-forksafe).
RECIPES = "python-path = %s\n" % os.path.join(ROOT, "python")
SETTINGS = "forksafe-settings = {dir}/app.ini\n"
JSON_SETTINGS = "forksafe-settings = {dir}/settings.json\n"
MIB = 1 << 20
NOABI = os.path.join(BUILD, "fixtures", "handler_noabi.so")
BADABI = os.path.join(BUILD, "fixtures", "handler_badabi.so")


def app(text):
    """An app.ini case: forksafe-settings points at it."""
    return {"body": SETTINGS, "files": {"app.ini": text}}


def make_unreadable(u):
    os.chmod(os.path.join(u.dir, "app.ini"), 0)


def bomb():
    lines = ["[app:main]", "a0 = " + "x" * 1024]
    for level in range(1, 4):
        lines.append("a%d = %s" % (level, ("%%(a%d)s" % (level - 1)) * 64))
    return "\n".join(lines) + "\n"


CASES = {
    # ---- the app settings file: ConfigParser syntax -----------------------------
    "app_line_without_delimiter": dict(
        app("[app:main]\na = 1\nthis line is junk\n"),
        expect=r"'this line is junk' in section \[app:main\] is not a 'key = value' line",
        at=("app.ini", "junk")),
    "app_text_before_first_section": dict(
        app("stray = 1\n[app:main]\na = 1\n"),
        expect=r"comes before the first \[section\] header", at=("app.ini", 1)),
    "app_duplicate_section": dict(
        app("[app:main]\na = 1\n\n[app:main]\nb = 2\n"),
        expect=r"duplicate section \[app:main\] \(first defined at line 1\)", at=("app.ini", 4)),
    "app_duplicate_default_key": dict(
        app("[DEFAULT]\nx = 1\nx = 2\n[app:main]\na = 1\n"),
        expect=r"duplicate key 'x' in section \[DEFAULT\] \(first defined at line 2\)",
        at=("app.ini", "x = 2")),
    "app_empty_key": dict(
        app("[app:main]\na = 1\n= orphan\n"),
        expect=r"has no key before the '='", at=("app.ini", "orphan")),
    "app_bom": dict(
        app("\ufeff[app:main]\na = 1\n"),
        expect=r"byte order mark", at=("app.ini", 1)),
    # ---- interpolation ---------------------------------------------------------------
    "app_undefined_interpolation": dict(
        app("[app:main]\na = 1\nurl = %(nowhere)s/db\n"),
        expect=r"'url' in section \[app:main\] refers to %\(nowhere\)s, but there is no key",
        at=("app.ini", "nowhere")),
    "default_interpolation_loop": dict(
        app("[DEFAULT]\nping = %(pong)s\npong = %(ping)s\n[app:main]\na = 1\n"),
        expect=r"interpolating 'ping' in section \[DEFAULT\] takes more than 10 steps",
        at=("app.ini", "ping =")),
    "app_lone_percent": dict(
        app("[app:main]\nratio = 50%\n"),
        expect=r"bad interpolation in 'ratio'.*'%' must be followed by '%' or '\('",
        at=("app.ini", "ratio")),
    "app_unclosed_reference": dict(
        app("[app:main]\nurl = %(name\n"),
        expect=r"a reference must look like %\(name\)s", at=("app.ini", "url")),
    "app_interpolation_bomb": dict(
        app(bomb()),
        expect=r"the value of 'a3' in section \[app:main\] grows past 16 MiB",
        at=("app.ini", "a3 =")),
    # ---- huge lines and values ----------------------------------------------------
    "app_huge_junk_line": dict(
        app("[app:main]\na = 1\n" + "j" * (2 * MIB) + "\n"),
        expect=r"'j{60}\.\.\.' in section \[app:main\] is not a 'key = value' line",
        at=("app.ini", 3)),
    "app_huge_value_undefined_reference": dict(
        app("[app:main]\na = 1\nbig = " + "v" * (2 * MIB) + "%(missing)s\n"),
        expect=r"'big' in section \[app:main\] refers to %\(missing\)s", at=("app.ini", 3)),
    "directive_huge_event_name": dict(
        body="forksafe-subscribe = " + "e" * (MIB + 10) + " exec:true\n",
        expect=r"unknown event 'eeee", at=("uwsgi.ini", "eeeeeeee")),
    # ---- NUL bytes and invalid UTF-8 --------------------------------------------------
    "app_nul_in_key": dict(
        app(b"[app:main]\na = 1\nke\x00y = 2\n"),
        expect=r"NUL byte in line", at=("app.ini", b"ke\x00y")),
    "app_nul_in_value": dict(
        app(b"[DEFAULT]\nd = 1\n[app:main]\na = 1\npassword = abc\x00def\n"),
        expect=r"NUL byte in line", at=("app.ini", b"abc\x00")),
    "app_nul_in_section_header": dict(
        app(b"[app:main]\na = 1\n[app:ma\x00in]\nb = 2\n"),
        expect=r"NUL byte in line", at=("app.ini", b"ma\x00in")),
    "app_invalid_utf8_in_key": dict(
        app(b"[app:main]\na = 1\nk\xffey = 2\n"),
        expect=r"byte 0xff \(byte 2 of the line\) is not valid UTF-8", at=("app.ini", b"k\xffey")),
    "app_invalid_utf8_in_value": dict(
        app(b"[app:main]\na = 1\nname = caf\xc3\x28\n"),
        expect=r"byte 0xc3 \(byte 11 of the line\) is not valid UTF-8", at=("app.ini", b"caf")),
    "app_surrogate_in_unread_section": dict(
        app(b"[app:main]\na = 1\n[other]\nz = \xed\xa0\x80\n"),
        expect=r"byte 0xed .* is not valid UTF-8", at=("app.ini", b"\xed")),
    "settings_filename_invalid_utf8": dict(
        body=b"forksafe-settings = {dir}/caf\xe9.ini\n",
        expect=r"cannot open the settings file.*No such file", at=("uwsgi.ini", b"caf\xe9")),
    # ---- the settings file itself: missing, unreadable, not a file ------------------
    "settings_section_named_with_colon_missing": dict(
        body="forksafe-settings = {dir}/app.ini#app:nosuch\n",
        files={"app.ini": "[app:main]\na = 1\n"},
        expect=r"no section \[app:nosuch\]", at=("uwsgi.ini", "#app:nosuch")),
    "settings_empty_file": dict(
        app(""), expect=r"no section \[app:main\]", at=("uwsgi.ini", "forksafe-settings")),
    "settings_is_a_directory": dict(
        body=SETTINGS, files={"app.ini": {}},
        expect=r"app\.ini: cannot read the settings file: it is a directory", at=("uwsgi.ini", "forksafe-settings")),
    "settings_is_a_fifo": dict(
        body=SETTINGS, files={"app.ini": None},
        expect=r"app\.ini.*not a regular file", at=("uwsgi.ini", "forksafe-settings")),
    "settings_unreadable": dict(
        app("[app:main]\na = 1\n"), setup=make_unreadable, as_nobody=True,
        expect=r"app\.ini.*Permission denied", at=("uwsgi.ini", "forksafe-settings")),
    "paste_missing_section": dict(
        head=PASTE_HEAD, body="paste = config:%p#nosuch\npythonpath = {app_dir}\n",
        extra="\n[app:main]\nuse = call:simple_app:make_app\n" + PASTE_WITNESS,
        expect=r"uwsgi\.ini: no section \[app:nosuch\]", at=("uwsgi.ini", "paste =")),
    "settings_empty_path": dict(
        body="forksafe-settings = #main\n",
        expect=r"cannot open the settings file", at=("uwsgi.ini", "forksafe-settings")),
    "settings_dev_zero": dict(
        body="forksafe-settings = /dev/zero\n",
        expect=r"/dev/zero: cannot read the settings file: it is a character device",
        at=("uwsgi.ini", "forksafe-settings")),
    "settings_use_config_fifo": dict(
        body=SETTINGS, files={"app.ini": "[app:main]\na = 1\nuse = config:other.ini\n",
                              "other.ini": None},
        expect=r"other\.ini: cannot read the settings file: it is a FIFO", at=("app.ini", "use =")),
    "settings_use_unknown_scheme": dict(
        app("[app:main]\nuse = foo:bar\n"),
        expect=r"'foo:bar' uses an unknown scheme", at=("app.ini", "use =")),
    "settings_use_missing_config_file": dict(
        app("[app:main]\na = 1\nuse = config:missing.ini\n"),
        expect=r"missing\.ini.*(No such file|cannot open)", at=("app.ini", "use =")),
    "settings_use_loop": dict(
        app("[app:main]\nuse = other\n[app:other]\nuse = main\n"),
        expect=r"'other' is reached through more than 32 'use' references",
        at=("app.ini", "use = other")),
    "settings_get_missing_global": dict(
        app("[app:main]\na = 1\nget x = nosuch\n"),
        expect=r"'get x = nosuch' in section \[app:main\]: there is no global setting",
        at=("app.ini", "get x")),
    "settings_empty_pipeline": dict(
        app("[pipeline:main]\npipeline =\n"),
        expect=r"the pipeline of section \[pipeline:main\] is empty", at=("app.ini", "pipeline =")),
    # ---- JSON settings ----------------------------------------------------------------
    "json_not_an_object": dict(
        body=JSON_SETTINGS, files={"settings.json": "[1, 2]\n"},
        expect=r"settings\.json: a JSON settings file must hold one object",
        at=("uwsgi.ini", "forksafe-settings")),
    "json_nested_object": dict(
        body=JSON_SETTINGS, files={"settings.json": '{"a": "1",\n "db": {"host": "x"}\n}\n'},
        expect=r"settings\.json: setting 'db' is an object", at=("uwsgi.ini", "forksafe-settings")),
    "json_duplicate_key": dict(
        body=JSON_SETTINGS, files={"settings.json": '{"a": "1",\n "b": "2",\n "a": "3"}\n'},
        expect=r"invalid JSON: duplicate object key", at=("settings.json", 3)),
    "json_invalid_utf8": dict(
        body=JSON_SETTINGS, files={"settings.json": b'{"a": "1",\n "b": "\xff"}\n'},
        expect=r"invalid JSON: unable to decode byte 0xff", at=("settings.json", 2)),
    "json_nul_escape": dict(
        body=JSON_SETTINGS, files={"settings.json": '{"a": "1",\n "b": "x\\u0000y"}\n'},
        expect=r"invalid JSON: .*\\u0000", at=("settings.json", 2)),
    "json_trailing_garbage": dict(
        body=JSON_SETTINGS, files={"settings.json": '{"a": "1"}\n\nextra\n'},
        expect=r"invalid JSON: end of file expected", at=("settings.json", 3)),
    "json_is_a_fifo": dict(
        body=JSON_SETTINGS, files={"settings.json": None},
        expect=r"settings\.json.*not a regular file", at=("uwsgi.ini", "forksafe-settings")),
    # ---- the [forksafe] section ---------------------------------------------------
    "section_unknown_event_key": dict(
        app("[app:main]\na = 1\n[forksafe]\npost_frok = exec:true\n"),
        expect=r"unknown event 'post_frok' \(did you mean 'post-fork'\?\)",
        at=("app.ini", "post_frok")),
    "section_duplicate_key": dict(
        app("[app:main]\na = 1\n[forksafe]\npost-fork = exec:true\npost-fork = exec:false\n"),
        expect=r"duplicate key 'post-fork' in section \[forksafe\]",
        at=("app.ini", "exec:false")),
    "section_undefined_interpolation": dict(
        app("[app:main]\na = 1\n[forksafe]\npost-fork = exec:%(nothere)s\n"),
        expect=r"refers to %\(nothere\)s", at=("app.ini", "nothere")),
    "section_invalid_utf8_in_handler": dict(
        app(b"[app:main]\na = 1\n[forksafe]\npost-fork = exec:echo \xc0\xaf\n"),
        expect=r"byte 0xc0 .* not valid UTF-8", at=("app.ini", b"\xc0")),
    "section_nul_in_handler": dict(
        app(b"[app:main]\na = 1\n[forksafe]\npost-fork = exec:true\x00; echo gotcha\n"),
        expect=r"NUL byte in line", at=("app.ini", b"gotcha")),
    "section_bad_option_on_continuation_line": dict(
        app("[app:main]\na = 1\n[forksafe]\npost-fork =\n    exec:true\n"
            "    once=yes exec:true\n"),
        expect=r"option 'once' takes no value", at=("app.ini", "once=yes")),
    "section_bad_line_after_comment_in_value": dict(
        app("[app:main]\na = 1\n[forksafe]\npost-fork =\n    exec:true\n"
            "# a comment inside the value\n    exec:false\n    nonsense:here\n"),
        expect=r"unknown handler kind 'nonsense:'", at=("app.ini", "nonsense")),
    # ---- the uwsgi ini -----------------------------------------------------------------
    "uwsgi_ini_junk_line_with_paste": dict(
        head=PASTE_HEAD, body="paste = config:%p\npythonpath = {app_dir}\nthis is not an option\n",
        extra="\n[app:main]\nuse = call:simple_app:make_app\n" + PASTE_WITNESS,
        expect=r"'this is not an option' in section \[uwsgi\] is not a 'key = value' line.*"
               r"PasteDeploy will refuse", at=("uwsgi.ini", "this is not an option")),
    "uwsgi_ini_invalid_utf8_with_paste": dict(
        head=PASTE_HEAD, body=b"paste = config:%p\npythonpath = {app_dir}\nprocname = w\xfcrker\n",
        extra="\n[app:main]\nuse = call:simple_app:make_app\n" + PASTE_WITNESS,
        expect=r"byte 0xfc .* not valid UTF-8", at=("uwsgi.ini", b"w\xfcrker")),
    "uwsgi_ini_nul_with_paste": dict(
        head=PASTE_HEAD, body=b"paste = config:%p\npythonpath = {app_dir}\nprocname = a\x00b\n",
        extra="\n[app:main]\nuse = call:simple_app:make_app\n" + PASTE_WITNESS,
        expect=r"NUL byte in line.*PasteDeploy will refuse", at=("uwsgi.ini", b"a\x00b")),
    "uwsgi_ini_app_section_bad_interpolation": dict(
        body="", extra="\n[app:main]\na = 1\nurl = %(undefined_here)s\n",
        expect=r"refers to %\(undefined_here\)s", at=("uwsgi.ini", "undefined_here")),
    "directive_after_commented_copy": dict(
        body="; forksafe-subscribe = post_fork exec:true\nprocname-prefix = x-\n"
             "forksafe-subscribe = post_fork exec:true\n",
        expect=r"unknown event 'post_fork'", at=("uwsgi.ini", ("= post_fork", 2))),
    # ---- forksafe-subscribe syntax ---------------------------------------------------
    "subscribe_option_twice": dict(
        body="forksafe-subscribe = post-fork once once exec:true\n",
        expect=r"option 'once' given twice", at=("uwsgi.ini", "once once")),
    "subscribe_id_zero": dict(
        body="forksafe-subscribe = post-fork id=0 exec:true\n",
        expect=r"bad id '0'", at=("uwsgi.ini", "id=0")),
    "subscribe_unknown_kind": dict(
        body="forksafe-subscribe = post-fork kind=thread exec:true\n",
        expect=r"unknown process kind 'thread'", at=("uwsgi.ini", "kind=thread")),
    "subscribe_unreachable_filter": dict(
        body="forksafe-subscribe = master-start kind=worker exec:true\n",
        expect=r"master-start only runs in the master", at=("uwsgi.ini", "kind=worker")),
    "subscribe_no_handler": dict(
        body="forksafe-subscribe = worker-exit once\n",
        expect=r"no handler", at=("uwsgi.ini", "worker-exit once")),
    "subscribe_empty_event_name": dict(
        body="forksafe-subscribe = post-fork,,worker-exit exec:true\n",
        expect=r"empty event name", at=("uwsgi.ini", ",,")),
    "subscribe_no_event": dict(
        body="forksafe-subscribe = exec:/bin/true\n",
        expect=r"no event before the handler", at=("uwsgi.ini", "= exec:/bin/true")),
    "subscribe_unknown_option": dict(
        body="forksafe-subscribe = post-fork retries=3 exec:true\n",
        expect=r"unknown option 'retries'", at=("uwsgi.ini", "retries")),
    "subscribe_bad_on_error": dict(
        body="forksafe-subscribe = post-fork on-error=retry exec:true\n",
        expect=r"bad on-error 'retry'", at=("uwsgi.ini", "on-error=retry")),
    "subscribe_empty_hook": dict(
        body="forksafe-subscribe = post-fork hook:\n",
        expect=r"empty handler 'hook:'", at=("uwsgi.ini", "hook:")),
    # ---- handlers that do not resolve --------------------------------------------------
    "dl_not_a_library": dict(
        body="forksafe-subscribe = post-fork dl:{dir}/notlib.so:fn\n",
        files={"notlib.so": "this is text, not ELF\n"},
        expect=r"cannot open .*notlib\.so", at=("uwsgi.ini", "notlib.so")),
    "dl_without_symbol": dict(
        body="forksafe-subscribe = worker-ready dl:{dir}/lib.so\n",
        expect=r"expected dl:PATH:SYMBOL", at=("uwsgi.ini", "lib.so")),
    "dl_directory": dict(
        body="forksafe-subscribe = post-fork dl:{dir}/adir:fn\n", files={"adir": {}},
        expect=r"cannot open .*adir", at=("uwsgi.ini", "adir")),
    "dl_without_abi_marker": dict(
        body="forksafe-subscribe = post-fork dl:%s:handler\n" % NOABI,
        expect=r"forksafe_handler_abi|ABI", at=("uwsgi.ini", "handler_noabi")),
    "dl_wrong_abi": dict(
        body="forksafe-subscribe = post-fork dl:%s:handler\n" % BADABI,
        expect=r"ABI", at=("uwsgi.ini", "handler_badabi")),
    "symbol_with_space": dict(
        body="forksafe-subscribe = post-fork symbol:two words\n",
        expect=r"expected symbol:NAME", at=("uwsgi.ini", "two words")),
    "python_missing_module": dict(
        body="forksafe-subscribe = post-fork python:no_such_module_xyz:fn\n",
        expect=r"no_such_module_xyz", at=("uwsgi.ini", "no_such_module_xyz")),
    "python_not_callable": dict(
        body="forksafe-subscribe = post-fork python:os:sep\n",
        expect=r"not callable", at=("uwsgi.ini", "python:os:sep")),
    "python_without_callable": dict(
        body="forksafe-subscribe = post-fork python:os\n",
        expect=r"python:MODULE:CALLABLE", at=("uwsgi.ini", "python:os")),
    # ---- recipe: (forksafe's Python package on the path, so that only the recipe is wrong)
    "recipe_unknown": dict(
        body=RECIPES + "forksafe-subscribe = post-fork recipe:sqlalchemi\n",
        expect=r"unknown recipe 'sqlalchemi'; the recipes are auto, gc-freeze, prometheus, "
               r"sqlalchemy", at=("uwsgi.ini", "sqlalchemi")),
    "recipe_unknown_option": dict(
        body=RECIPES + "forksafe-subscribe = post-fork recipe:sqlalchemy?befor=dispose\n",
        expect=r"recipe:sqlalchemy has no option befor= \(its options: before=\)",
        at=("uwsgi.ini", "befor=")),
    "recipe_bad_option_value": dict(
        body=RECIPES + "forksafe-subscribe = post-fork recipe:sqlalchemy?before=now\n",
        expect=r"before=now is not one of keep, dispose", at=("uwsgi.ini", "before=now")),
    "recipe_option_without_value": dict(
        body=RECIPES + "forksafe-subscribe = pre-fork recipe:gc-freeze?fast\n",
        expect=r"an option is written option=value \(several joined by &\), not .fast.", at=("uwsgi.ini", "gc-freeze?fast")),
    "recipe_at_an_event_it_has_no_part_in": dict(
        body=RECIPES + "forksafe-subscribe = worker-ready recipe:gc-freeze\n",
        expect=r"it has no part in worker-ready; it runs at pre-fork",
        at=("uwsgi.ini", "recipe:gc-freeze")),
    "recipe_without_forksafe_package": dict(
        body="forksafe-subscribe = post-fork recipe:sqlalchemy\n",
        expect=r"recipe: handlers need forksafe's Python package.*python3-forksafe",
        at=("uwsgi.ini", "recipe:sqlalchemy")),
    "recipe_in_the_forksafe_section": dict(
        head=PASTE_HEAD, body="paste = config:%p\npythonpath = {app_dir}\n" + RECIPES,
        extra="\n[app:main]\nuse = call:simple_app:make_app\n" + PASTE_WITNESS
              + "pre-fork = recipe:gc-freeze?collect=no\n",
        expect=r"recipe:gc-freeze has no option collect= \(its options: none\)",
        at=("uwsgi.ini", "collect=no")),
    # ---- policy, timeout, history, stats, overrides -------------------------------------
    "on_error_list": dict(
        body="forksafe-on-error = exit,fatal\n",
        expect=r"forksafe-on-error must be log, exit or fatal", at=("uwsgi.ini", "exit,fatal")),
    "timeout_zero": dict(
        body="forksafe-timeout = 0\n",
        expect=r"forksafe-timeout must be a number of seconds", at=("uwsgi.ini", "timeout = 0")),
    "timeout_nan": dict(
        body="forksafe-timeout = nan\n",
        expect=r"forksafe-timeout must be a number of seconds", at=("uwsgi.ini", "nan")),
    "timeout_too_long": dict(
        body="forksafe-timeout = 86401\n",
        expect=r"between 0 and 86400, not '86401'", at=("uwsgi.ini", "86401")),
    "history_negative": dict(
        body="forksafe-history = -1\n",
        expect=r"forksafe-history must be a number", at=("uwsgi.ini", "history = -1")),
    "history_too_big": dict(
        body="forksafe-history = 1000001\n",
        expect=r"between 0 and 1000000", at=("uwsgi.ini", "1000001")),
    "history_trailing_garbage": dict(
        body="forksafe-history = 12abc\n",
        expect=r"not '12abc'", at=("uwsgi.ini", "12abc")),
    "stats_bad_port": dict(
        body="forksafe-stats = 127.0.0.1:notaport\n",
        expect=r"forksafe-stats cannot listen on '127.0.0.1:notaport'",
        at=("uwsgi.ini", "notaport")),
    "stats_missing_directory": dict(
        body="forksafe-stats = /nonexistent/dir/forksafe.sock\n",
        expect=r"forksafe-stats cannot listen on '/nonexistent/dir/forksafe.sock'",
        at=("uwsgi.ini", "/nonexistent/dir")),
    "set_invalid_utf8": dict(
        body=b"forksafe-set = name=caf\xe9\n",
        expect=r"not valid UTF-8", at=("uwsgi.ini", b"caf\xe9")),
    "subscribe_invalid_utf8_handler": dict(
        body=b"forksafe-subscribe = post-fork exec:echo caf\xe9\n",
        expect=r"not valid UTF-8", at=("uwsgi.ini", b"caf\xe9")),
    "settings_path_invalid_utf8": dict(
        body=b"forksafe-settings = {dir}/caf\xe9.ini\n",
        files={b"caf\xe9.ini": "[app:main]\na = 1\n"},
        expect=r"not valid UTF-8", at=("uwsgi.ini", b"caf\xe9")),
    "set_without_equals": dict(
        body="forksafe-set = just-a-word\n",
        expect=r"'just-a-word' is not a setting override", at=("uwsgi.ini", "just-a-word")),
    "set_empty_key": dict(
        body="forksafe-set = =orphan\n",
        expect=r"'=orphan' is not a setting override", at=("uwsgi.ini", "=orphan")),
}


def _substitute(content, u):
    table = {"dir": u.dir, "record": u.record, "recorder": RECORDER, "app_dir": APP_DIR,
             "plugin_dir": PLUGIN_DIR, "failing": FAILING}
    if isinstance(content, bytes):
        for key, value in table.items():
            content = content.replace(b"{%s}" % key.encode(), value.encode())
        return content
    return content.replace("{dir}", u.dir).replace("{record}", u.record)


class BadInputTest(IntegrationCase):

    def test_the_table_has_at_least_30_distinct_cases(self):
        bodies = set()
        for name, case in CASES.items():
            key = (repr(case.get("body")), repr(case.get("files")), repr(case.get("extra")))
            self.assertNotIn(key, bodies, "%s repeats another case" % name)
            bodies.add(key)
        self.assertGreaterEqual(len(CASES), 30)

    def run_case(self, name):
        case = CASES[name]
        body = case.get("body", "")
        raw = isinstance(body, bytes)
        head_text = case.get("head", HEAD)
        if "paste" in body if not raw else b"paste" in body:
            head_text = head_text.replace("wsgi-file = {app_dir}/simple_app.py\n", "")
        text = head_text if not raw else ""
        u = Uwsgi(self, text + ("" if raw else body), extra_sections="")
        # The ini is rewritten as bytes: cases may hold bytes that are not UTF-8.
        with open(u.ini, "rb") as f:
            head = f.read()
        if raw:
            head = head_text.format(dir=u.dir, port=u.port, record=u.record, recorder=RECORDER,
                               plugin_dir=PLUGIN_DIR, app_dir=APP_DIR, pidfile=u.pidfile).encode()
            head += _substitute(body, u)
        extra = case.get("extra", "")
        head += _substitute(extra.encode() if isinstance(extra, str) else extra, u)
        if EMBEDDED:
            from harness import without_plugin_loading
            head = without_plugin_loading(head.decode("latin-1")).encode("latin-1")
        with open(u.ini, "wb") as f:
            f.write(head)
        for filename, content in case.get("files", {}).items():
            path = os.path.join(u.dir.encode(), filename if isinstance(filename, bytes)
                                else filename.encode())
            if content is None:
                os.mkfifo(path)
            elif isinstance(content, dict):
                os.mkdir(path)
            else:
                data = _substitute(content, u)
                with open(path, "wb") as f:
                    f.write(data if isinstance(data, bytes) else data.encode())
        if case.get("setup"):
            case["setup"](u)
        prefix = []
        if case.get("as_nobody"):
            os.chmod(u.dir, 0o777)
            os.chmod(u.ini, 0o644)
            prefix = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
        status = self.run_to_exit(u, prefix)

        with open(u.log, "rb") as f:
            log = f.read().decode("utf-8", "replace")
        self.assertNotEqual(status, 0, log[-3000:])
        self.assertNotIn("spawned uWSGI worker", log)
        self.assertNotIn("spawned uWSGI mule", log)
        self.assertEqual(u.events(), [], "the recorder got events")
        self.assertFalse(os.path.exists(os.path.join(u.dir, "forked")), "a post-fork ran")
        errors = [l for l in log.splitlines() if l.startswith("[forksafe] ")]
        self.assertTrue(errors, log[-3000:])
        error = errors[-1]
        self.assertLess(len(error), 2000, "the error line is not short: %r" % error[:200])
        self.assertRegex(error, case["expect"])
        filename, where = case["at"]
        path = os.path.join(u.dir, filename)
        if isinstance(where, int):
            line = where
        else:
            marker, nth = where if isinstance(where, tuple) else (where, 1)
            marker = marker.encode() if isinstance(marker, str) else marker
            with open(path, "rb") as f:
                lines = f.read().split(b"\n")
            line = [i + 1 for i, l in enumerate(lines) if marker in l][nth - 1]
        shown = path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        self.assertTrue(error.startswith("[forksafe] %s:%d: " % (shown, line)),
                        "expected %s:%d, got %r" % (shown, line, error[:300]))

    # Only a safety net against a hang: a busy machine may take a while to
    # start uWSGI and Python before the error stops it.
    def run_to_exit(self, u, prefix, timeout=60):
        logf = open(u.log, "ab")
        try:
            u.proc = subprocess.Popen(prefix + [UWSGI, "--ini", u.ini], stdout=logf,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      cwd=u.dir, start_new_session=True)
            self.addCleanup(u.kill)
            try:
                return u.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                u.kill()
                raise AssertionError("uWSGI did not exit within %ds (hung?):\n%s"
                                     % (timeout, u.log_text()[-3000:])) from None
        finally:
            logf.close()


def _make_test(name):
    def test(self):
        self.run_case(name)
    test.__name__ = "test_" + name
    return test


for _name in CASES:
    setattr(BadInputTest, "test_" + _name, _make_test(_name))

if shutil.which("setpriv") is None:  # util-linux, always on Debian; say so if not
    raise RuntimeError("setpriv (util-linux) is needed for the unreadable-file case")
