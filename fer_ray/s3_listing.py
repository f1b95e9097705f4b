"""Listing an S3 prefix on many threads, flat prefixes included.

A listing request (ListObjectsV2) returns one page of at most 1000 keys, in key order, and
the next page can only be asked for after this one arrives: one prefix is one chain of round
trips, however many threads wait. Sub-prefixes can be listed side by side (storage.py does,
level by level), but a flat prefix (AffectNet's `train_set/images/`: ~290k keys on one
level) has none. Key ranges split it: a request with `StartAfter=a` lists the keys after
`a`, so the keys after the first page are cut into ranges `(a, b]` at name characters, each
listed on its own thread; a range whose first page is full is cut again while threads are
idle. The ranges partition the key space exactly, whatever characters the keys hold: the
cut points only choose where ranges start, so every key is listed exactly once.

Pure of any client: `RangedLister` takes the function that sends one request (storage.py's,
with its retries), so the range logic is tested without a server too.
"""
from __future__ import annotations

import calendar
import os
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Callable

# Name characters ranges are cut at, in S3's key order (UTF-8 bytes; ASCII here): those of
# the class of the name character being cut (names numbered 0..N are cut at digits only, so
# few ranges come out empty). '/' is never one: a cut inside a sub-prefix would split what a
# delimiter listing rolls up.
CUT_CLASSES = ("0123456789", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
CUT_CHARACTERS = "-.0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"
PAGE_KEYS = 1000  # S3's largest page

ListPage = Callable[[dict], dict]  # ListObjectsV2 keyword arguments -> its response
Entry = Callable[[str, int, int], Any]  # (key, size, mtime_ns) -> what the listing keeps per object


@dataclass(frozen=True, slots=True)
class KeyRange:
    """The keys under `prefix` after `after` and up to `upto` (None: to the end)."""
    prefix: str
    after: str = ""
    upto: str | None = None

    def holds(self, key: str) -> bool:
        return self.upto is None or key <= self.upto


def cut_points(first: str, last: str, key_range: KeyRange) -> list[str]:
    """Where to cut the keys of `key_range` that follow a full page from `first` to `last`.

    At the last character the page's first and last names share (the names after the page
    most likely vary there: 'img0000'..'img0999' is followed by 'img1000'..'img9999'), at
    character of the same class after the last name's: 'img1', 'img2', ... Only points inside
    (last, upto] are kept, so the cuts partition what is left of the range."""
    shared = len(os.path.commonprefix([first, last]))
    position = max(shared - 1, len(key_range.prefix))
    stem, cut = last[:position], last[position:position + 1]
    characters = next((chars for chars in CUT_CLASSES if cut and cut in chars), CUT_CHARACTERS)
    return [point for point in (stem + ch for ch in characters) if point > last and key_range.holds(point)]


def split(key_range: KeyRange, first: str, last: str) -> list[KeyRange]:
    """What follows a full page of `key_range`, as consecutive ranges (one when no cut fits)."""
    bounds = [last, *cut_points(first, last, key_range), key_range.upto]
    return [KeyRange(key_range.prefix, after, upto) for after, upto in zip(bounds, bounds[1:])]


def mtime_ns(modified) -> int:
    """A listing's LastModified (a UTC datetime, millisecond precision) in ns since the epoch,
    exactly as pyarrow reports it (no float rounding)."""
    return calendar.timegm(modified.utctimetuple()) * 10**9 + modified.microsecond * 1000


@dataclass
class Listing:
    """What a listing found: an entry per object (each once: the ranges do not overlap),
    sub-prefixes (with a delimiter) and whether anything at all (a directory marker
    included) is under each listed prefix."""
    objects: list = field(default_factory=list)
    prefixes: set[str] = field(default_factory=set)
    found: set[str] = field(default_factory=set)
    pages: int = 0
    ranges: int = 0
    peak_in_flight: int = 0


class RangedLister:
    """Lists prefixes of one bucket on `threads` threads, cutting full ranges while threads
    are idle (a range then costs one request more, often an empty one; cutting stops once
    every thread is busy, so a listing costs little more than its pages)."""

    def __init__(self, list_page: ListPage, bucket: str, threads: int, page_keys: int | None = None,
                 entry: Entry = lambda key, size, mtime: (key, size, mtime)):
        """entry: what is kept per object, made as the page arrives (no second copy of the
        listing: a million objects are held once)."""
        self.list_page, self.bucket, self.threads, self.entry = list_page, bucket, threads, entry
        self.page_keys = page_keys or PAGE_KEYS

    def list(self, prefixes: list[str], delimiter: str = "") -> Listing:
        listing = Listing()
        with ThreadPoolExecutor(self.threads, thread_name_prefix="fer-ray-list") as pool:
            pending: dict[Future, KeyRange] = {}
            listing.ranges = len(prefixes)
            for prefix in prefixes:
                self._submit(pool, pending, KeyRange(prefix), delimiter, listing)
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    key_range = pending.pop(future)
                    idle = len(pending) + 1 < self.threads  # a thread besides this range's
                    for follow in self._take(key_range, future.result(), listing, idle):
                        self._submit(pool, pending, follow, delimiter, listing)
        return listing

    def _submit(self, pool, pending: dict, key_range: KeyRange, delimiter: str, listing: Listing) -> None:
        request: dict[str, Any] = {"Bucket": self.bucket, "Prefix": key_range.prefix, "MaxKeys": self.page_keys}
        if key_range.after:
            request["StartAfter"] = key_range.after
        if delimiter:
            request["Delimiter"] = delimiter
        pending[pool.submit(self.list_page, request)] = key_range
        listing.peak_in_flight = max(listing.peak_in_flight, len(pending))

    def _take(self, key_range: KeyRange, page: dict, listing: Listing, idle: bool) -> list[KeyRange]:
        """Keeps a page's entries inside the range; returns the ranges still to list."""
        listing.pages += 1
        names = sorted([(item["Key"], item) for item in page.get("Contents", [])]
                       + [(item["Prefix"], None) for item in page.get("CommonPrefixes", [])],
                       key=lambda pair: pair[0])
        inside = [(name, item) for name, item in names if key_range.holds(name)]
        if inside:
            listing.found.add(key_range.prefix)
        for name, item in inside:
            if item is None:
                listing.prefixes.add(name)
            elif not name.endswith("/"):  # a directory marker is no file
                listing.objects.append(self.entry(name, item.get("Size", 0), mtime_ns(item["LastModified"])))
        if not page.get("IsTruncated") or len(inside) < len(names) or not inside:
            return []
        first, last = inside[0][0], inside[-1][0]
        if idle:
            ranges = split(key_range, first, last)
            listing.ranges += len(ranges) - 1
            return ranges
        return [KeyRange(key_range.prefix, last, key_range.upto)]
