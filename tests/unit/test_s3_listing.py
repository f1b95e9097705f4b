"""Key-range listing (fer_ray/s3_listing.py) without a server: a sorted key list answers
ListObjectsV2 as S3 does (Prefix, StartAfter, Delimiter roll-up, MaxKeys, IsTruncated), so
the range logic is checked on awkward names and at 100,000 keys in a second. The same
listing against the real S3 test server is in tests/integration/test_listing_scale.py."""
from __future__ import annotations

import bisect
import datetime
import random
import threading
import time

import pytest

from fer_ray import s3_listing
from fer_ray.s3_listing import KeyRange, RangedLister, cut_points, split

MODIFIED = datetime.datetime(2026, 11, 30, 12, 0, 1, 234000, tzinfo=datetime.timezone.utc)


class SortedKeys:
    """ListObjectsV2 over an in-memory bucket, counting requests and the most at once."""

    def __init__(self, keys):
        self.keys = sorted(set(keys))
        self.requests = self.in_flight = self.peak = 0
        self.lock = threading.Lock()

    def __call__(self, request: dict) -> dict:
        with self.lock:
            self.requests += 1
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        try:
            time.sleep(0.001)  # a round trip, so that requests overlap as on a real store
            return self.page(request)
        finally:
            with self.lock:
                self.in_flight -= 1

    def page(self, request: dict) -> dict:
        prefix, delimiter = request["Prefix"], request.get("Delimiter", "")
        at = bisect.bisect_right(self.keys, request.get("StartAfter", ""))
        at = max(at, bisect.bisect_left(self.keys, prefix))
        contents, prefixes = [], []
        while at < len(self.keys) and self.keys[at].startswith(prefix):
            if len(contents) + len(prefixes) == request["MaxKeys"]:
                return {"Contents": contents, "CommonPrefixes": prefixes, "IsTruncated": True}
            key = self.keys[at]
            cut = key.find(delimiter, len(prefix)) if delimiter else -1
            if cut >= 0:  # rolled up: one entry for everything under the sub-prefix
                prefixes.append({"Prefix": key[:cut + 1]})
                at = bisect.bisect_left(self.keys, key[:cut + 1] + "\U0010ffff")
                continue
            contents.append({"Key": key, "Size": len(key), "LastModified": MODIFIED})
            at += 1
        return {"Contents": contents, "CommonPrefixes": prefixes, "IsTruncated": False}


def listed(store: SortedKeys, prefixes, delimiter="", threads=16, page_keys=100):
    """The listing, its objects as {key: (size, mtime_ns)}, checked to be each listed once."""
    found = RangedLister(store, "bucket", threads, page_keys).list(prefixes, delimiter)
    objects = {key: (size, mtime) for key, size, mtime in found.objects}
    assert len(objects) == len(found.objects)
    found.objects = objects
    return found


def affectnet_names(n: int) -> list[str]:
    return [f"train_set/images/{i}.jpg" for i in range(n)]


def test_a_flat_prefix_is_listed_whole_on_many_threads():
    store = SortedKeys(affectnet_names(20_000) + ["train_set/annotations/0_exp.npy"])
    found = listed(store, ["train_set/images/"])
    assert sorted(found.objects) == sorted(affectnet_names(20_000))
    assert found.objects["train_set/images/7.jpg"] == (len("train_set/images/7.jpg"), s3_listing.mtime_ns(MODIFIED))
    assert found.ranges > 16 and store.peak > 8  # cut into ranges, listed side by side
    # each page of the 200 needed at least once, the extra requests are the cuts' first pages
    assert 200 <= found.pages == store.requests < 2 * 200


def test_awkward_names_are_each_listed_exactly_once():
    rng = random.Random(7)
    alphabet = "09az_-.~ AZé\u4e2d/"
    keys = {"p/" + "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12))) for _ in range(5000)}
    keys |= {"p/1", "p/2", "p/img", "p/img1", "p/a/", "p/\U0001f600.jpg", "q/outside", "o/before"}
    store = SortedKeys(keys)
    found = listed(store, ["p/"], page_keys=7)
    assert sorted(found.objects) == sorted(k for k in keys if k.startswith("p/") and not k.endswith("/"))


def test_a_delimiter_listing_gives_each_file_and_sub_prefix_of_one_level_once():
    keys = [f"top/{i:05d}.jpg" for i in range(3000)]
    keys += [f"top/class_{c}/{i}.jpg" for c in range(40) for i in range(30)]
    keys += ["top/empty/", "top/zz/deep/er/1.jpg"]
    store = SortedKeys(keys)
    found = listed(store, ["top/"], delimiter="/", page_keys=50)
    assert sorted(found.objects) == [f"top/{i:05d}.jpg" for i in range(3000)]
    assert found.prefixes == {f"top/class_{c}/" for c in range(40)} | {"top/empty/", "top/zz/"}
    assert found.found == {"top/"}


def test_with_every_thread_busy_ranges_are_continued_not_cut():
    store = SortedKeys(affectnet_names(5000))
    found = listed(store, ["train_set/images/"], threads=1)
    assert found.ranges == 1 and found.pages == store.requests == 50 and store.peak == 1
    assert len(found.objects) == 5000


def test_nothing_under_a_prefix_is_found_empty():
    found = listed(SortedKeys(["a/1", "c/1"]), ["b/"])
    assert not found.objects and not found.found and found.pages == 1


@pytest.mark.parametrize(("first", "last", "expected_stem"), [
    ("p/img0000.jpg", "p/img0999.jpg", "p/img"),  # the next names vary at the 4th digit
    ("p/0.jpg", "p/100898.jpg", "p/"),  # numbers without padding: cut at the first digit
    ("p/100899.jpg", "p/101797.jpg", "p/1"),
])
def test_cuts_fall_where_the_next_names_vary(first, last, expected_stem):
    points = cut_points(first, last, KeyRange("p/"))
    assert points and all(p.startswith(expected_stem) and len(p) == len(expected_stem) + 1 for p in points)
    assert all(p > last for p in points) and points == sorted(points)


def test_split_ranges_follow_each_other_and_stay_inside_the_range():
    key_range = KeyRange("p/", "p/0", "p/5")
    ranges = split(key_range, "p/100", "p/199")
    assert ranges[0].after == "p/199" and ranges[-1].upto == "p/5"
    assert all(a.upto == b.after for a, b in zip(ranges, ranges[1:]))
    assert all(r.upto is None or r.upto <= "p/5" for r in ranges)
