#!/usr/bin/python3
"""Works out the deb-src entries `apt-get source` needs for this machine's
Debian suites, from the configured `deb` entries, and writes the missing
ones to one deb822 file.

    debsrc.py --sources-list FILE --sources-dir DIR [--lists DIR]
              [--codename NAME] [--write FILE]

Reads FILE and DIR/*.list, DIR/*.sources the way apt does (one-line and
deb822 formats, disabled entries skipped).  A `deb` entry counts as a Debian
suite when its suite is the release codename or CODENAME-something
(bookworm, bookworm-updates, bookworm-security, ...), unless apt's lists
already hold that suite's Release file and it names another Origin (a
third-party repository publishing a `bookworm` suite usually has no source
indices, and asking for them would make `apt-get update` fail).

Prints the deb822 text of the deb-src entries still missing (nothing when
every Debian suite already has one); with --write, also writes it to FILE.
Exit status: 0 on success, 2 when no Debian suite is configured at all.
"""

import argparse
import glob
import os
import re
import sys

HEADER = ("# Written by forksafe's scripts/embedded.sh: source entries for\n"
          "# `apt-get source uwsgi`, mirroring the deb entries of the Debian suites.\n")


class Entry:
    """One source entry: kind (deb / deb-src), URIs, suites, components,
    and the fields to carry over to a deb-src twin."""

    def __init__(self, types, uris, suites, components, carry, where):
        self.types = types
        self.uris = [u.rstrip("/") for u in uris]
        self.suites = suites
        self.components = components
        self.carry = carry  # [(field name, raw value)] in deb822 spelling
        self.where = where


class SourcesError(Exception):
    pass


def parse_one_line(path):
    entries = []
    with open(path, errors="replace") as f:
        for number, raw in enumerate(f, 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            where = "%s:%d" % (path, number)
            m = re.match(r"^(deb|deb-src)\s+(?:\[([^\]]*)\]\s*)?(\S+)\s+(\S+)\s*(.*)$", line)
            if not m:
                raise SourcesError("%s: cannot parse source line: %s" % (where, line))
            kind, options, uri, suite, components = m.groups()
            carry = []
            enabled = True
            for option in (options or "").split():
                key, _, value = option.partition("=")
                key = key.lower()
                if key == "signed-by":
                    carry.append(("Signed-By", value))
                elif key == "trusted":
                    carry.append(("Trusted", value))
                elif key == "enabled" and value.lower() in ("no", "false", "0"):
                    enabled = False
            if enabled:
                entries.append(Entry([kind], [uri], [suite], components.split(), carry, where))
    return entries


def deb822_stanzas(path):
    """Yields (line number, {field: raw value}, [(field, spelling)]) per
    stanza; field names folded to lower case, continuation lines kept (an
    inline Signed-By key block stays intact)."""
    fields, order, start, last = {}, [], None, None
    with open(path, errors="replace") as f:
        lines = f.read().splitlines()
    for number, line in enumerate(lines + [""], 1):
        if line.startswith("#"):
            continue
        if not line.strip():
            if fields:
                yield start, fields, order
            fields, order, start, last = {}, [], None, None
            continue
        if line[0] in " \t":
            if last is None:
                raise SourcesError("%s:%d: continuation line outside a field" % (path, number))
            fields[last] += "\n" + line
            continue
        name, colon, value = line.partition(":")
        if not colon:
            raise SourcesError("%s:%d: expected 'Field: value', got: %s" % (path, number, line))
        last = name.strip().lower()
        if start is None:
            start = number
        fields[last] = value.strip()
        order.append((last, name.strip()))


def parse_deb822(path):
    entries = []
    for number, fields, order in deb822_stanzas(path):
        where = "%s:%d" % (path, number)
        if fields.get("enabled", "yes").strip().lower() in ("no", "false", "0"):
            continue
        for required in ("types", "uris", "suites"):
            if required not in fields:
                raise SourcesError("%s: stanza has no %s field" % (where, required.capitalize()))
        carry = [(original, fields[name]) for name, original in order
                 if name in ("signed-by", "trusted")]
        entries.append(Entry(fields["types"].split(), fields["uris"].split(),
                             fields["suites"].split(), fields.get("components", "").split(),
                             carry, where))
    return entries


def read_sources(sources_list, sources_dir):
    entries = []
    if sources_list and os.path.isfile(sources_list):
        entries += parse_one_line(sources_list)
    if sources_dir and os.path.isdir(sources_dir):
        # apt reads the parts directory in name order, whatever the format
        for path in sorted(glob.glob(os.path.join(sources_dir, "*"))):
            if path.endswith(".list"):
                entries += parse_one_line(path)
            elif path.endswith(".sources"):
                entries += parse_deb822(path)
    return entries


def release_origin(lists_dir, uri, suite):
    """The Origin in apt's copy of URI SUITE's Release file, or None when
    apt has not fetched it (yet)."""
    if not lists_dir:
        return None
    mangled = re.sub(r"^[a-z0-9+.-]+://([^@/]*@)?", "", uri).replace("/", "_")
    for name in ("InRelease", "Release"):
        path = os.path.join(lists_dir, "%s_dists_%s_%s" % (mangled, suite.replace("/", "_"), name))
        try:
            with open(path, errors="replace") as f:
                for line in f:
                    if line.startswith("Origin:"):
                        return line.split(":", 1)[1].strip()
                    if not line.strip():
                        break
        except OSError:
            continue
    return None


def is_debian_suite(codename, lists_dir, uri, suite):
    if suite != codename and not suite.startswith(codename + "-"):
        return False
    origin = release_origin(lists_dir, uri, suite)
    return origin is None or origin == "Debian"


def missing_deb_src(entries, codename, lists_dir):
    """(stanzas to write, number of Debian deb entries seen)."""
    have = {(u, s) for e in entries if "deb-src" in e.types for u in e.uris for s in e.suites}
    stanzas, seen = [], 0
    for e in entries:
        if "deb" not in e.types or not e.components:
            continue  # flat repositories have no suites to mirror
        suites = [s for s in e.suites
                  if any(is_debian_suite(codename, lists_dir, u, s) for u in e.uris)]
        seen += bool(suites)
        suites = [s for s in suites if any((u, s) not in have for u in e.uris)]
        if not suites:
            continue
        lines = ["Types: deb-src", "URIs: " + " ".join(e.uris), "Suites: " + " ".join(suites),
                 "Components: " + " ".join(e.components)]
        lines += ["%s: %s" % kv for kv in e.carry]
        stanzas.append("\n".join(lines) + "\n")
        have.update((u, s) for u in e.uris for s in suites)
    return stanzas, seen


def os_codename():
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("VERSION_CODENAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return ""


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sources-list", required=True)
    parser.add_argument("--sources-dir", required=True)
    parser.add_argument("--lists", default="")
    parser.add_argument("--codename", default="")
    parser.add_argument("--write", metavar="FILE")
    args = parser.parse_args(argv)
    codename = args.codename or os_codename()
    if not codename:
        print("debsrc: cannot tell the Debian release (no VERSION_CODENAME in /etc/os-release)",
              file=sys.stderr)
        return 2
    try:
        entries = read_sources(args.sources_list, args.sources_dir)
    except (OSError, SourcesError) as e:
        print("debsrc: %s" % e, file=sys.stderr)
        return 2
    stanzas, seen = missing_deb_src(entries, codename, args.lists)
    if not seen:
        print("debsrc: no deb entry for a Debian %s suite in %s or %s/" %
              (codename, args.sources_list, args.sources_dir.rstrip("/")), file=sys.stderr)
        return 2
    if not stanzas:
        return 0
    text = HEADER + "\n" + "\n".join(stanzas)
    sys.stdout.write(text)
    if args.write:
        tmp = args.write + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
