"""Every relative link and #anchor in README.md and docs/*.md resolves.

No network and no nginx: external links (http:, https:, mailto:) are not
followed.  Anchors follow GitHub's rules: the heading text lower-cased,
markup dropped, punctuation other than '-' and '_' removed, spaces turned
into '-', and a repeated slug suffixed '-1', '-2', ...
"""

import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

LINK = re.compile(r'!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?'
                  r'(?:\s+"[^"]*")?\s*\)')
FENCE = re.compile(r'^\s*(```|~~~)')
HEADING = re.compile(r'^(#{1,6})\s+(.*?)\s*#*\s*$')
REF_DEF = re.compile(r'^\s{0,3}\[[^\]]+\]:\s*<?([^\s>]+)>?')
HTML_REF = re.compile(r'<(?:a|img)\s[^>]*(?:href|src)="([^"]+)"')
HTML_ID = re.compile(r'<a\s+(?:name|id)="([^"]+)"')


def doc_files():
    files = [os.path.join(ROOT, 'README.md')]
    docs = os.path.join(ROOT, 'docs')
    for name in sorted(os.listdir(docs)):
        if name.endswith('.md'):
            files.append(os.path.join(docs, name))
    return files


def prose_lines(path):
    """The lines of a markdown file outside fenced code blocks."""
    fenced = False
    with open(path, encoding='utf-8') as f:
        for n, line in enumerate(f, 1):
            if FENCE.match(line):
                fenced = not fenced
                continue
            if not fenced:
                yield n, line


def slug(text):
    text = re.sub(r'!?\[([^\]]*)\]\([^)]*\)', r'\1', text)  # links: text
    text = re.sub(r'<[^>]+>', '', text)                     # inline html
    text = text.strip().lower()
    text = re.sub(r'[^\w\- ]', '', text)                    # punctuation
    return text.replace(' ', '-')


_anchors = {}


def anchors(path):
    cache = _anchors
    if path not in cache:
        seen = {}
        found = set()
        for _, line in prose_lines(path):
            found.update(HTML_ID.findall(line))
            m = HEADING.match(line)
            if not m:
                continue
            s = slug(m.group(2))
            if s in seen:
                seen[s] += 1
                s = '%s-%d' % (s, seen[s])
            else:
                seen[s] = 0
            found.add(s)
        cache[path] = found
    return cache[path]


def links(path):
    for n, line in prose_lines(path):
        line = re.sub(r'`[^`]*`', '', line)  # code spans are not links
        for m in LINK.finditer(line):
            yield n, m.group(1)
        for rx in (REF_DEF, HTML_REF):
            for m in rx.finditer(line):
                yield n, m.group(1)


def broken_links(path):
    bad = []
    for n, target in links(path):
        if re.match(r'^[a-z][a-z0-9+.-]*:', target, re.I):
            continue                         # http:, https:, mailto:
        file_part, _, frag = target.partition('#')
        if file_part:
            dest = os.path.normpath(os.path.join(os.path.dirname(path),
                                                 file_part))
            if (path.startswith(ROOT + os.sep)
                    and not dest.startswith(ROOT + os.sep)):
                bad.append('%d: %s leaves the repository' % (n, target))
                continue
            if not os.path.exists(dest):
                bad.append('%d: %s: no such file' % (n, target))
                continue
        else:
            dest = path
        if frag and dest.endswith('.md') and frag not in anchors(dest):
            bad.append('%d: %s: no heading with that anchor' % (n, target))
    return bad


def test_slug_rules():
    # GitHub's anchor rules, checked so the link test itself cannot drift.
    assert slug('Admission across redirects, subrequests and `satisfy`') \
        == 'admission-across-redirects-subrequests-and-satisfy'
    assert slug('Response cache') == 'response-cache'
    assert slug('The ring (v2): 64 KiB') == 'the-ring-v2-64-kib'
    assert slug('[Redis](docs/redis.md) & Bloom') == 'redis--bloom'


def test_checker_finds_a_broken_link(tmp_path):
    # A checker that cannot fail is no test: feed it broken links.
    page = tmp_path / 'page.md'
    page.write_text('# Title\n[a](#title) [b](#nope) [c](missing.md)\n'
                    '```\n[d](#in-code-is-ignored)\n```\n'
                    '`[e](#in-a-code-span)` <img src="gone.png">\n'
                    '[ref]: other.md#x\n')
    bad = broken_links(str(page))
    assert len(bad) == 4, bad
    assert '#nope' in bad[0] and 'missing.md' in bad[1]
    assert 'gone.png' in bad[2] and 'other.md' in bad[3]


@pytest.mark.parametrize('path', doc_files(),
                         ids=lambda p: os.path.relpath(p, ROOT))
def test_links_resolve(path):
    bad = broken_links(path)
    assert not bad, '%s:\n  %s' % (os.path.relpath(path, ROOT),
                                   '\n  '.join(bad))
