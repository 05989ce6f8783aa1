#!/usr/bin/env python3
"""Builds the seed corpus of each fuzz target from tests/fixtures.

    fuzz/seed-corpus.py            # writes fuzz/corpus/{admission,maps,reference}

admission: every AdmissionReview of tests/fixtures/admission, as is.
maps:      every maps file of tests/fixtures/maps, a NUL byte, then the images
           (one per line) of all the reviews and maps files; and each maps file
           with each image alone.
reference: every image of the reviews, every key and value of the maps files,
           and a few edge cases of the grammar.

Files are named by the hash of their content, so running it again over an
existing corpus (which libFuzzer grows) only adds what is missing.
"""
import hashlib
import json
import pathlib
import re
import sys

FUZZ = pathlib.Path(__file__).resolve().parent
FIXTURES = FUZZ.parent / "tests" / "fixtures"
CORPUS = FUZZ / "corpus"

# Edge cases of the distribution grammar, the same kinds src/swap/reference.rs's
# tests name (ports, IPv6, digests, separators, length limits).
DIGEST = "sha256:" + "0123456789abcdef" * 4
EXTRA_IMAGES = [
    "nginx", "localhost:5000/app:dev", "[::1]:5000/app", "[fe80::1]/app",
    "Registry.Example/app", f"kindest/node@{DIGEST}", f"gcr.io/app:v1@{DIGEST}",
    "a__b/c--d/e.f_g:TAG_1.0-x", "a" * 255, "app:" + "t" * 128, "nginx:", "a//b",
]


def images_in(value, out):
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "image" and isinstance(item, str):
                out.append(item)
            else:
                images_in(item, out)
    elif isinstance(value, list):
        for item in value:
            images_in(item, out)


def maps_parts(text):
    """Keys and values of the rules of a maps file (maps.md §1, roughly)."""
    parts = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        sep = "::" if "::" in line else ":"
        for part in line.split(sep):
            part = re.sub(r"^\[(EXACT|REPLACE)\]", "", part.strip())
            parts.extend(p.strip() for p in part.split(",") if p.strip())
    return parts


def write(target, data):
    directory = CORPUS / target
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / hashlib.sha1(data).hexdigest()
    if not path.exists():
        path.write_bytes(data)
        return 1
    return 0


def main():
    reviews = sorted((FIXTURES / "admission").glob("*.review.json"))
    maps_files = sorted((FIXTURES / "maps").glob("*.conf"))
    if not reviews or not maps_files:
        sys.exit(f"seed-corpus: no fixtures under {FIXTURES}")
    images = []
    written = {"admission": 0, "maps": 0, "reference": 0}
    for review in reviews:
        data = review.read_bytes()
        written["admission"] += write("admission", data)
        images_in(json.loads(data), images)
    maps_texts = [m.read_text() for m in maps_files]
    parts = [p for text in maps_texts for p in maps_parts(text)]
    images = list(dict.fromkeys(images + EXTRA_IMAGES))
    for text in maps_texts:
        all_images = "\n".join(images + parts)
        written["maps"] += write("maps", f"{text}\0{all_images}\n".encode())
        for image in images:
            written["maps"] += write("maps", f"{text}\0{image}\n".encode())
    for s in dict.fromkeys(images + parts):
        written["reference"] += write("reference", s.encode())
    for target, count in written.items():
        total = len(list((CORPUS / target).iterdir()))
        print(f"seed-corpus: {target}: {count} new, {total} in fuzz/corpus/{target}")


if __name__ == "__main__":
    main()
