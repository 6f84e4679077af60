"""Differential test: forksafe's settings parser against Debian's PasteDeploy.

Generates many settings files (deterministic seed) that exercise
ConfigParser's and PasteDeploy's rules, and compares
build/tools/settings_dump with

    paste.deploy.appconfig('config:' + path, name='main')

(.local_conf and .global_conf).  Where PasteDeploy accepts a file, the two
must be equal; where it refuses one, forksafe must refuse it too.

PasteDeploy runs in one child /usr/bin/python3 under a UTF-8 locale (the
way it reads files depends on the locale), with a tiny module on its path
for the `use = call:...` factories.

Run from tests/differential:  /usr/bin/python3 -m unittest -v
"""
import json
import os
import random
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / 'build' / 'tools' / 'settings_dump'
GOLDEN = ROOT / 'tests' / 'golden' / 'ini'
SEED = 20240611
VALID_CASES = 320
INVALID_CASES = 160

FACTORY_MODULE = '''
def app(global_conf, **settings):
    return None

def filt(global_conf, **settings):
    return lambda app: app
'''

# Reads [[path, name], ...] on stdin, writes one result per file.
PASTEDEPLOY_RUNNER = r'''
import json, sys
from paste.deploy import appconfig
results = []
for path, name in json.load(sys.stdin):
    try:
        conf = appconfig('config:' + path, name=name)
        results.append({'ok': True, 'local': dict(conf.local_conf),
                        'global': dict(conf.global_conf)})
    except Exception as e:  # any refusal counts
        results.append({'ok': False, 'error': '%s: %s' % (type(e).__name__, e)})
json.dump(results, sys.stdout)
'''


def ensure_tool():
    if not TOOL.exists():
        subprocess.run(['make', '-C', str(ROOT), 'tools'], check=True,
                       stdout=subprocess.DEVNULL)


def run_pastedeploy(workdir, items):
    env = dict(os.environ, LC_ALL='C.UTF-8', LANG='C.UTF-8', PYTHONPATH=str(workdir))
    env.pop('PYTHONUTF8', None)
    runner = Path(workdir) / 'pastedeploy_runner.py'
    runner.write_text(PASTEDEPLOY_RUNNER)
    proc = subprocess.run(['/usr/bin/python3', str(runner)], input=json.dumps(items),
                          capture_output=True, text=True, env=env, check=True)
    return json.loads(proc.stdout)


def run_forksafe(spec):
    proc = subprocess.run([str(TOOL), spec], capture_output=True)
    out = proc.stdout.decode('utf-8', 'replace')
    if proc.returncode == 0:
        return {'ok': True, **json.loads(out)}
    if proc.returncode != 1 or not out.startswith('ERROR '):
        raise AssertionError('settings_dump %s crashed (exit %d): %s %s'
                             % (spec, proc.returncode, out, proc.stderr))
    return {'ok': False, 'error': out.strip()}


# ------------------------------------------------------------------ generator

UNICODE_WORDS = ['café', 'straße', 'Ωmega', '日本語', 'naïve', '🙂ok', 'ёлка']
UNICODE_SPACES = ['\u00a0', '\u3000', '\u2003', '\x0b', '\x0c']


class Generator:
    """Builds one settings file as a list of lines plus bookkeeping about
    which keys exist where, so that most files are valid."""

    def __init__(self, rng, name):
        self.rng = rng
        self.name = name
        self.counter = 0
        self.default_keys = []     # keys of [DEFAULT], in order
        self.extra_files = {}      # file name -> text, for use = config:

    def fresh_key(self):
        self.counter += 1
        rng = self.rng
        n = self.counter
        style = rng.random()
        if style < 0.5:
            return rng.choice(['db', 'url', 'name', 'path', 'host', 'retry', 'item']) + str(n)
        if style < 0.7:
            return rng.choice(['sqlalchemy.url', 'pyramid.reload', 'mako.dirs', 'a.b.c']) + str(n)
        if style < 0.8:
            return rng.choice(['Key', 'KEY', 'kEy']) + str(n)
        if style < 0.9:
            return rng.choice(['clé', '日本', 'größe']) + str(n)
        return rng.choice(['with space', 'dash-key', 'under_score', 'dollar$']) + str(n)

    def plain_word(self):
        rng = self.rng
        choice = rng.random()
        if choice < 0.3:
            return rng.choice(['true', 'false', '42', '3.14', 'hello', 'x y z', 'a=b', 'c:d'])
        if choice < 0.45:
            return rng.choice(UNICODE_WORDS)
        if choice < 0.6:
            return rng.choice(['postgresql://user:pw@db:5432/app', 'sqlite:///%%(here)s/x.db',
                               'redis://:secret@localhost:6379/0', 'http://example.com/?q=1'])
        if choice < 0.7:
            return rng.choice(['value ; not a comment', 'value # not a comment either',
                               'a;b', 'x #y'])
        if choice < 0.8:
            return rng.choice(['100%%', '%%(not)s', '50%% off'])
        if choice < 0.9:
            return rng.choice(['[bracket]', '[app:fake]', '"quoted"', "'single'"])
        return ''.join(rng.choice('abcdefghijklmnop _-./') for _ in range(rng.randint(1, 12))).strip() or 'w'

    def value(self, refs):
        """A one-line raw value, maybe with %(ref)s references to REFS."""
        rng = self.rng
        parts = []
        for _ in range(rng.randint(1, 3)):
            if refs and rng.random() < 0.35:
                parts.append('%%(%s)s' % rng.choice(refs))
            else:
                parts.append(self.plain_word())
        text = rng.choice(['', ' ', '/', '-']).join(parts)
        # Python strips Unicode whitespace from values too.
        if rng.random() < 0.08:
            text = rng.choice(UNICODE_SPACES) + text + rng.choice(UNICODE_SPACES)
        return text

    def option_lines(self, key, refs, indent=''):
        rng = self.rng
        delimiter = rng.choice(['=', '=', '=', ':'])
        before = rng.choice(['', ' ', ' ', '\t', '  '])
        after = rng.choice(['', ' ', ' ', '\t', '  '])
        first = self.value(refs)
        if rng.random() < 0.1:
            first = ''
        lines = [indent + key + before + delimiter + after + first]
        if rng.random() < 0.25:
            deeper = indent + rng.choice([' ', '  ', '\t', '    ', '\u3000'])
            for _ in range(rng.randint(1, 4)):
                kind = rng.random()
                if kind < 0.15:
                    lines.append(rng.choice(['', '   ', '\t']))
                elif kind < 0.25:
                    lines.append(deeper + rng.choice(['# comment inside', '; also a comment']))
                else:
                    lines.append(deeper + self.value(refs))
            if rng.random() < 0.3:
                lines.append('')
        return lines

    def comment_lines(self):
        rng = self.rng
        if rng.random() < 0.3:
            return [rng.choice(['# a comment', '; semicolon comment', '   # indented', '#',
                                '  ;x = y'])]
        if rng.random() < 0.2:
            return ['']
        return []

    def build(self, valid_tweaks=True):
        rng = self.rng
        lines = []
        lines += self.comment_lines()

        # [DEFAULT]: values may refer only to earlier defaults and here/__file__.
        if rng.random() < 0.75:
            lines.append('[DEFAULT]')
            refs = ['here', '__file__']
            for _ in range(rng.randint(1, 6)):
                key = self.fresh_key()
                if rng.random() < 0.1:
                    lines.append(key + ' =')  # empty: the `or val` quirk
                else:
                    lines += self.option_lines(key, refs)
                refs.append(key)
                self.default_keys.append(key)
                lines += self.comment_lines()
            if rng.random() < 0.15:
                empty = self.fresh_key()
                lines.append(empty + ' = ')
                quirk = self.fresh_key()
                lines.append('%s = %%(%s)s' % (quirk, empty))
                self.default_keys += [empty, quirk]
            if rng.random() < 0.1:
                lines.append('set fromdefault%d = dv' % self.counter)
            lines.append('')

        # Sections PasteDeploy does not read for app:main.
        if rng.random() < 0.5:
            lines += ['[uwsgi]', 'http = :8080', 'master = true', 'processes = 2', '']
        if rng.random() < 0.3:
            lines += ['[server:main]', 'use = egg:waitress#main', 'port = 6543', '']

        use_kind = rng.random()
        other_section = []
        if use_kind < 0.6:
            use = 'call:fsx_app:app'
        elif use_kind < 0.8:
            use = 'other'
            other_section = ['[app:other]', 'use = call:fsx_app:app']
            for _ in range(rng.randint(0, 3)):
                key = self.fresh_key()
                other_section += self.option_lines(key, self.default_keys + ['here'])
            if rng.random() < 0.5:
                other_section.append('set og%d = from other' % self.counter)
            other_section.append('')
        else:
            base = '%s_base.ini' % self.name
            use = 'config:%s' % base if rng.random() < 0.5 else 'config:%s#main' % base
            base_lines = ['[DEFAULT]', 'basedefault = b %(here)s', '', '[app:main]',
                          'use = call:fsx_app:app', 'fromBase = %(basedefault)s', 'shared = base']
            if rng.random() < 0.5:
                base_lines.append('set baseglobal = bg')
            self.extra_files[base] = '\n'.join(base_lines) + '\n'

        lines.append(rng.choice(['[app:main]', '[app:main]', '[app: main ]', '[app:main] trailing']))
        section_keys = []
        use_line = 'use' + rng.choice([' = ', '=', ': ', ' : ']) + use
        body = []
        for i in range(rng.randint(1, 10)):
            roll = rng.random()
            refs = self.default_keys + section_keys + ['here', '__file__']
            if roll < 0.08 and self.default_keys:
                # Shadows a default: leaves local_conf, still used for interpolation.
                key = rng.choice(self.default_keys)
                if key in section_keys:
                    continue
                body.append(self.option_lines(key, [k for k in refs if k != key]))
                section_keys.append(key)
            elif roll < 0.15:
                name = 'g%d' % self.counter
                self.counter += 1
                body.append(['set %s = %s' % (name, self.value(refs))])
                if rng.random() < 0.7:
                    body.append(['get l%s = %s' % (name, name)])
            elif roll < 0.2 and self.default_keys:
                body.append(['get fromdefault%d = %s' % (self.counter, rng.choice(self.default_keys))])
                self.counter += 1
            elif roll < 0.25:
                # Same letters, other case: a different key.
                key = self.fresh_key()
                body.append(self.option_lines(key, refs))
                body.append(self.option_lines(key.upper() if key != key.upper() else key.lower(), refs))
                section_keys += [key, key.upper() if key != key.upper() else key.lower()]
            elif roll < 0.3:
                # "key:with = x": the first delimiter wins.
                key = self.fresh_key()
                body.append(['%s:tail = %s' % (key, self.plain_word())])
                section_keys.append(key)
            elif roll < 0.33 and i == 0:
                # Indented, but not deeper than a previous option line.
                body.append(['  ' + self.fresh_key() + ' = indented key'])
            else:
                key = self.fresh_key()
                body.append(self.option_lines(key, refs))
                section_keys.append(key)
            body.append(self.comment_lines())
        # Anywhere but before an indented line, which would continue it.
        body.insert(rng.randint(1, len(body)), [use_line])
        if rng.random() < 0.15:
            body.append(['filter-with = f'])
            other_section += ['[filter:f]', 'use = call:fsx_app:filt', 'fkey = fv', '']
        for chunk in body:
            lines += chunk
        lines.append('')
        lines += other_section
        if rng.random() < 0.2:
            lines += ['[app:unrelated]', 'use = call:fsx_app:app', 'z = %(missing)s', '']
        return lines

    @staticmethod
    def encode(lines, rng):
        newline = rng.choice(['\n'] * 6 + ['\r\n', '\r'])
        text = newline.join(lines)
        if rng.random() < 0.8:
            text += newline
        return text.encode('utf-8')


INVALID_MUTATIONS = []


def mutation(fn):
    INVALID_MUTATIONS.append(fn)
    return fn


def main_index(lines):
    return next(i for i, line in enumerate(lines) if line.startswith('[app:main') or line.startswith('[app: main'))


@mutation
def duplicate_key(lines, rng):
    i = main_index(lines)
    return lines[:i + 1] + ['dup = 1', 'dup = 2'] + lines[i + 1:]


@mutation
def duplicate_default_key(lines, rng):
    return ['[DEFAULT]', 'dd = 1', 'dd = 2', ''] + lines


@mutation
def duplicate_default_across_blocks(lines, rng):
    return ['[DEFAULT]', 'dd = 1', ''] + lines + ['[DEFAULT]', 'dd = 2']


@mutation
def duplicate_section(lines, rng):
    return lines + ['[app:main]', 'again = yes']


@mutation
def text_before_header(lines, rng):
    return [rng.choice(['stray = value', 'stray', '  indented = x'])] + lines


@mutation
def no_delimiter(lines, rng):
    i = main_index(lines)
    return lines[:i + 1] + ['just words here'] + lines[i + 1:]


@mutation
def empty_key(lines, rng):
    i = main_index(lines)
    return lines[:i + 1] + [rng.choice(['= value', ': value'])] + lines[i + 1:]


@mutation
def missing_reference(lines, rng):
    i = main_index(lines)
    return lines[:i + 1] + ['broken = %(nowhere)s'] + lines[i + 1:]


@mutation
def bad_percent(lines, rng):
    i = main_index(lines)
    bad = rng.choice(['100%', '%d', '%(name)d', '%(unclosed', 'a % b', '%()s'])
    return lines[:i + 1] + ['broken = ' + bad] + lines[i + 1:]


@mutation
def too_deep(lines, rng):
    i = main_index(lines)
    depth = rng.choice([11, 12, 20])
    chain = ['c%d = %%(c%d)s' % (n, n + 1) for n in range(depth)] + ['c%d = end%%%%' % depth]
    return lines[:i + 1] + chain + lines[i + 1:]


@mutation
def loop(lines, rng):
    i = main_index(lines)
    return lines[:i + 1] + ['la = %(lb)s', 'lb = x %(la)s'] + lines[i + 1:]


@mutation
def default_loop(lines, rng):
    return ['[DEFAULT]', 'da = %(db)s', 'db = %(da)s', ''] + lines


@mutation
def default_missing(lines, rng):
    # Defaults are interpolated against the defaults alone.
    return ['[DEFAULT]', 'dm = %(onlyinsection)s', ''] + lines


@mutation
def get_missing(lines, rng):
    i = main_index(lines)
    return lines[:i + 1] + ['get lost = no_such_global'] + lines[i + 1:]


@mutation
def no_main_section(lines, rng):
    return [line.replace('[app:main', '[app:notmain').replace('[app: main', '[app:notmain')
            for line in lines]


@mutation
def call_without_function(lines, rng):
    i = main_index(lines)
    rest = [line for line in lines[i + 1:] if not line.startswith('use')]
    return lines[:i + 1] + ['use = call:fsx_app'] + rest


@mutation
def missing_filter(lines, rng):
    i = main_index(lines)
    rest = [line for line in lines[i + 1:] if not line.startswith('filter-with')]
    return lines[:i + 1] + ['filter-with = nosuchfilter'] + rest


@mutation
def ambiguous_main(lines, rng):
    return lines + ['[composite:main]', 'use = call:fsx_app:app']


@mutation
def use_loop(lines, rng):
    i = main_index(lines)
    rest = [line for line in lines[i + 1:] if not line.startswith('use')]
    return lines[:i + 1] + ['use = main'] + rest


def encode_invalid(name, lines, rng):
    special = rng.random()
    if name == 'bom' or special < 0.04:
        return b'\xef\xbb\xbf' + '\n'.join(lines).encode('utf-8')
    if name == 'bad_utf8' or special < 0.08:
        return '\n'.join(lines).encode('utf-8') + b'\n[app:x]\nk = \xff\xfe\n'
    return Generator.encode(lines, rng)


# Edge constructs where either outcome is plausible; both sides must agree.

def chain(rng):
    depth = rng.randint(8, 12)
    tail = rng.choice(['end', 'end%%', '%%(x)s'])
    return ['c%d = %%(c%d)s' % (n, n + 1) for n in range(depth)] + ['c%d = %s' % (depth, tail)]


BOUNDARY_TEMPLATES = [
    lambda rng: ['[app:main]', 'use = call:fsx_app:app'] + chain(rng),
    lambda rng: ['[DEFAULT]'] + chain(rng) + ['[app:main]', 'use = call:fsx_app:app', 'v = %(c0)s'],
    lambda rng: ['[DEFAULT]', 'a = 1', '[app:main]', 'use = call:fsx_app:app', 'k = %(a)s %(b)s',
                 '[DEFAULT]', 'b = 2'],
    lambda rng: ['[DEFAULT]', 'here = %s' % rng.choice(['/custom', '%(__file__)s.d', '']),
                 '[app:main]', 'use = call:fsx_app:app', 'h = %(here)s'],
    lambda rng: ['[app:main]', 'use = call:fsx_app:app', 'here = mine', '__file__ = f',
                 'h = %(here)s %(__file__)s'],
    lambda rng: ['[ app:main ]', 'use = call:fsx_app:app', 'k = v'],
    lambda rng: ['[app:main]', 'use = call:fsx_app:app', rng.choice(['set  spaced  = v', 'set\tx = v',
                 'set x =', 'get h = here', 'get f = __file__', 'get  g =  here ', 'set = x',
                 'get = y'])],
    lambda rng: ['[app:main]', 'use = call:fsx_app:app',
                 'k =' + rng.choice(['', ' first']), rng.choice([' ', '\t', '\u3000', '    ']) + 'second',
                 rng.choice(['', '  ', '  # c', '; c']), '   third', '', ''],
    lambda rng: ['[app:main]', rng.choice(['x = 0', ' x = 0', '']), rng.choice(['\tk = v', ' k = v']),
                 rng.choice([' cont', '\tcont', '  cont', 'cont', '\u3000cont']), 'use = call:fsx_app:app'],
    lambda rng: ['[app:main]', 'use = call:fsx_app:app', 'k =', '', '  ', '# only comments', ''],
    lambda rng: ['[app:main]', 'use = call:fsx_app:app', 'k = v', 'no delimiter', '   continued'],
    lambda rng: ['[pipeline:main]', 'pipeline = ' + rng.choice(['f1 realapp', 'realapp', '', 'f1 nosuch']),
                 rng.choice(['', 'extra = x']),
                 '[filter:f1]', 'use = call:fsx_app:filt', '[app:realapp]', 'use = call:fsx_app:app', 'x = 1'],
    lambda rng: ['[filter-app:main]', 'use = call:fsx_app:filt', rng.choice(['next = realapp', '', 'next = nosuch']),
                 'fa = 1', '[app:realapp]', 'use = call:fsx_app:app', 'x = 1'],
    lambda rng: ['[composite:main]', 'use = call:fsx_app:app', 'k = v'],
    lambda rng: ['[application:main]', 'use = call:fsx_app:app', 'k = v'],
    lambda rng: ['[app:main]', 'use = call:fsx_app:app', 'k = v', '[application:main]',
                 'use = call:fsx_app:app', 'k = w'],
    lambda rng: ['[app:main]', 'use = ' + rng.choice(['other', 'config:other.ini',
                                                       'nosuch:thing', 'call:fsx_app:app#ignored']),
                 'k = v', '[app:other]', 'use = call:fsx_app:app', 'k = o', 'o = 1'],
    lambda rng: ['[app:main]', 'use = other', 'k = v', '[app:other]', 'use = third', 'set s = 1',
                 '[app:third]', 'use = call:fsx_app:app', 'set s = 3', 't = 3'],
    lambda rng: ['[app:main]', 'use = call:fsx_app:app', 'paste.app_factory = fsx_app:app'],
    lambda rng: ['[app:main]', 'paste.app_factory = fsx_app:app', 'k = v'],
    lambda rng: ['[app:main]', 'use = call:fsx_app:app', 'filter-with = f', 'k = v',
                 '[filter:f]', rng.choice(['use = call:fsx_app:filt', 'use = call:fsx_app:filt\nz = %(nope)s',
                                           'paste.filter_factory = fsx_app:filt'])],
    lambda rng: ['[app:main]', 'use = call:fsx_app:app', 'k = %(' + rng.choice(['K', 'k2', 'ｋ']) + ')s',
                 'K = upper', 'k2 = two'],
    lambda rng: ['[app:main]', 'use = call:fsx_app:app', 'k = ' + rng.choice(['%', '%%', '%%%', '%(x)', '%(x)s%',
                                                                              '%()s', '%(a b)s', '%(x)S']),
                 'x = 1', 'a b = 2'],
    lambda rng: ['[app:main]', 'use = call:fsx_app:app', rng.choice(['[notheader', '[]', '[] x', '[x] = y', 'x[y] = z'])],
    lambda rng: ['#!comment', ' ; indented comment', '', '[app:main]', 'use = call:fsx_app:app', 'a = b'],
    lambda rng: ['[app:main]', 'use = call:fsx_app:app', 'k' + rng.choice(['\u00a0', '\u2003', ' \u3000']) + '= v'
                 + rng.choice(['\u00a0', '\u205f', ''])],
    lambda rng: ['[DEFAULT]', 'set sd = %(localonly)s', 'get gd = here', '[app:main]',
                 'use = call:fsx_app:app', 'localonly = L'],
    lambda rng: ['[DEFAULT]', 'e =', 'q = %(e)s', 'r = %(e)s%(e)s', 's = x%(e)s', '[app:main]',
                 'use = call:fsx_app:app', 'uq = %(q)s'],
]

# ---------------------------------------------------------------------- tests

class PasteDeployDifferential(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        ensure_tool()
        cls.tmp = tempfile.TemporaryDirectory(prefix='forksafe-diff-')
        cls.dir = Path(cls.tmp.name)
        (cls.dir / 'fsx_app.py').write_text(FACTORY_MODULE)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def compare(self, files, expect=None):
        """Writes FILES {name: bytes}, runs both sides, returns
        [(name, pastedeploy, forksafe)]."""
        paths = []
        for name, data in files.items():
            path = self.dir / name
            path.write_bytes(data)
            if name.endswith('.ini') and not name.endswith('_base.ini') and name != 'other.ini':
                paths.append(str(path))
        reference = run_pastedeploy(self.dir, [[p, 'main'] for p in paths])
        results = []
        for path, ref in zip(paths, reference):
            ours = run_forksafe(path)
            results.append((path, ref, ours))
        return results

    def assert_agree(self, path, ref, ours):
        text = Path(path).read_bytes().decode('utf-8', 'replace')
        if ref['ok']:
            self.assertTrue(ours['ok'], '%s: PasteDeploy accepts it, forksafe says %s\n---\n%s'
                            % (path, ours.get('error'), text))
            self.assertEqual(ours['local'], ref['local'], '%s local_conf differs\n---\n%s' % (path, text))
            self.assertEqual(ours['global'], ref['global'], '%s global_conf differs\n---\n%s' % (path, text))
        else:
            self.assertFalse(ours['ok'], '%s: PasteDeploy refuses it (%s), forksafe accepts it\n---\n%s'
                             % (path, ref['error'], text))

    def test_generated_valid_files(self):
        rng = random.Random(SEED)
        files = {}
        for n in range(VALID_CASES):
            gen = Generator(rng, 'valid%03d' % n)
            lines = gen.build()
            files['valid%03d.ini' % n] = Generator.encode(lines, rng)
            for name, text in gen.extra_files.items():
                files[name] = text.encode('utf-8')
        results = self.compare(files)
        accepted = sum(1 for _, ref, _ in results if ref['ok'])
        for path, ref, ours in results:
            with self.subTest(path=Path(path).name):
                self.assert_agree(path, ref, ours)
        # The generator aims for valid files; most must be.
        self.assertGreater(accepted, VALID_CASES * 0.8)

    def test_generated_invalid_files(self):
        rng = random.Random(SEED + 1)
        files = {}
        for n in range(INVALID_CASES):
            gen = Generator(rng, 'invalid%03d' % n)
            lines = gen.build()
            mutate = INVALID_MUTATIONS[n % len(INVALID_MUTATIONS)]
            lines = mutate(lines, rng)
            files['invalid%03d.ini' % n] = encode_invalid(mutate.__name__, lines, rng)
            for name, text in gen.extra_files.items():
                files[name] = text.encode('utf-8')
        files['bom.ini'] = encode_invalid('bom', ['[app:main]', 'use = call:fsx_app:app'], rng)
        files['bad_utf8.ini'] = encode_invalid('bad_utf8', ['[app:main]', 'use = call:fsx_app:app'], rng)
        results = self.compare(files)
        refused = sum(1 for _, ref, _ in results if not ref['ok'])
        for path, ref, ours in results:
            with self.subTest(path=Path(path).name):
                self.assert_agree(path, ref, ours)
        self.assertGreater(refused, INVALID_CASES * 0.9)

    def test_boundary_files(self):
        rng = random.Random(SEED + 2)
        files = {'other.ini': b'[app:main]\nuse = call:fsx_app:app\nfromother = 1\n'}
        for n in range(3 * len(BOUNDARY_TEMPLATES)):
            lines = BOUNDARY_TEMPLATES[n % len(BOUNDARY_TEMPLATES)](rng)
            files['boundary%03d.ini' % n] = Generator.encode(lines, rng)
        results = self.compare(files)
        outcomes = {ref['ok'] for _, ref, _ in results}
        self.assertEqual(outcomes, {True, False})
        for path, ref, ours in results:
            with self.subTest(path=Path(path).name):
                self.assert_agree(path, ref, ours)

    def test_golden_files(self):
        """Golden inputs PasteDeploy accepts, forksafe accepts identically;
        golden inputs with an expected error PasteDeploy refuses too (except
        where forksafe is knowingly stricter: NUL bytes)."""
        goldens = sorted(GOLDEN.glob('*.ini'))
        self.assertGreater(len(goldens), 20)
        files = {p.name: p.read_bytes() for p in goldens}
        for path, ref, ours in self.compare(files):
            name = Path(path).stem
            with self.subTest(golden=name):
                if ref['ok']:
                    self.assertTrue(ours['ok'] or 'nul' in name,
                                    '%s: PasteDeploy accepts, forksafe: %s' % (name, ours.get('error')))
                    if ours['ok']:
                        self.assertEqual(ours['local'], ref['local'], name)
                        self.assertEqual(ours['global'], ref['global'], name)
                if (GOLDEN / (name + '.err')).exists() and 'nul' not in name:
                    self.assertFalse(ref['ok'], '%s.err expects an error, PasteDeploy accepts it' % name)

    def test_known_leniency(self):
        """Where forksafe knowingly accepts what PasteDeploy refuses: a
        ConfigParser problem in a section the settings do not come from
        (uWSGI's own sections may repeat keys), a section with no factory,
        and what only importing Python code could tell (egg: entry points,
        `require`d distributions)."""
        files = {
            'lenient_uwsgi.ini': b'[uwsgi]\nenv = A=1\nenv = B=2\n\n[app:main]\nuse = call:fsx_app:app\nk = v\n',
            'lenient_nofactory.ini': b'[app:main]\nk = v\n',
            'lenient_egg.ini': b'[app:main]\nuse = egg:NoSuchDistribution#main\nk = v\n',
            'lenient_require.ini': b'[app:main]\nuse = call:fsx_app:app\nrequire = NoSuchDistribution\nk = v\n',
        }
        for path, ref, ours in self.compare(files):
            with self.subTest(path=Path(path).name):
                self.assertFalse(ref['ok'])
                self.assertTrue(ours['ok'], ours.get('error'))
                self.assertEqual(ours['local'], {'k': 'v'})

    def test_errors_name_file_and_line(self):
        path = self.dir / 'located.ini'
        path.write_text('[app:main]\nuse = call:fsx_app:app\n\nsqlalchemy.url = a\nsqlalchemy.url = b\n')
        ours = run_forksafe(str(path))
        self.assertEqual(ours['error'], "ERROR %s:5: duplicate key 'sqlalchemy.url' in section "
                                        "[app:main] (first defined at line 4)" % path)


if __name__ == '__main__':
    unittest.main()
