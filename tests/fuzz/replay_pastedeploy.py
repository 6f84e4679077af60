"""Replays what the fuzzers kept against Debian's PasteDeploy.

    /usr/bin/python3 tests/fuzz/replay_pastedeploy.py [CORPUS_DIR[:PREFIX]...]

The harnesses only see forksafe; this compares each kept settings file's
build/tools/settings_dump result (`FILE#main`) with
paste.deploy.appconfig('config:FILE', name='main'), the way the
differential test does for its generated files.  Default: the fuzz_ini and
fuzz_interpolate corpora in build/fuzz/corpus (the latter with the
"[DEFAULT]" line its harness puts in front).

Where PasteDeploy accepts a file, forksafe must give the same local_conf and
global_conf; where PasteDeploy refuses it, forksafe must refuse it too -
except for the refusals forksafe knowingly does not share (the differential
test's test_known_leniency): the code a `use` names cannot be imported or has
no factory, and ConfigParser problems in sections the settings do not come
from.
Prints each disagreement and exits 1 if there is any.
"""
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / 'tests' / 'differential'))
import test_pastedeploy as differential  # noqa: E402

# Modules the seeds' `use = call:MODULE:NAME` lines name, each with a
# factory under any name, so that more of the kept files load in Python.
ANY_FACTORY = 'def __getattr__(name):\n    return lambda *args, **kwargs: (lambda app: app)\n'
SEED_MODULES = ['m', 'inner', 'authmod', 'myapp', 'forksafe_sqla']

DEFAULT_CORPORA = ['build/fuzz/corpus/fuzz_ini', 'build/fuzz/corpus/fuzz_interpolate:[DEFAULT]\n']

# What PasteDeploy refuses for reasons outside the settings themselves.
LENIENT = ('ModuleNotFoundError', 'ImportError', 'AttributeError', 'LookupError',
           'PackageNotFoundError', 'ValueError: A distribution name is required',
           'ParsingError', 'DuplicateSectionError', 'DuplicateOptionError',
           'MissingSectionHeaderError')


def replay(corpus, prefix, work):
    files = sorted(p for p in Path(corpus).iterdir() if p.is_file())
    items = []
    for n, source in enumerate(files):
        directory = work / ('%s-%d' % (Path(corpus).name, n))
        directory.mkdir()
        path = directory / 'app.ini'
        path.write_bytes(prefix.encode() + source.read_bytes())
        items.append([str(path), 'main'])
    references = differential.run_pastedeploy(work, items) if items else []
    disagreements = 0
    for source, (path, _), ref in zip(files, items, references):
        ours = differential.run_forksafe(path + '#main')
        if ref['ok']:
            same = ours['ok'] and ours['local'] == ref['local'] and ours['global'] == ref['global']
            why = 'PasteDeploy accepts it; forksafe %s' % (
                'differs' if ours['ok'] else 'says ' + ours['error'])
        else:
            same = not ours['ok'] or ref['error'].startswith(LENIENT)
            why = 'PasteDeploy refuses it (%s); forksafe accepts it' % ref['error'][:200]
        if not same:
            disagreements += 1
            print('!! %s: %s' % (source, why))
    print('%s: %d files, %d accepted by PasteDeploy, %d disagreements'
          % (corpus, len(files), sum(r['ok'] for r in references), disagreements))
    return disagreements


def main(argv):
    work = Path(tempfile.mkdtemp(prefix='forksafe-replay-'))
    try:
        differential.ensure_tool()
        (work / 'fsx_app.py').write_text(differential.FACTORY_MODULE)
        for module in SEED_MODULES:
            (work / (module + '.py')).write_text(ANY_FACTORY)
        total = 0
        for spec in argv or DEFAULT_CORPORA:
            corpus, _, prefix = spec.partition(':')
            if Path(corpus).is_dir():
                total += replay(corpus, prefix, work)
            else:
                print('%s: no such corpus (run make fuzz first)' % corpus)
        return 1 if total else 0
    finally:
        shutil.rmtree(work)


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
