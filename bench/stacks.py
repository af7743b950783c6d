"""Summarise py-spy's raw (collapsed) output: the top functions by inclusive and by own samples."""

import sys
from collections import Counter


def main(path: str, top: int = 35) -> None:
    inclusive, own, total = Counter(), Counter(), 0
    for line in open(path):
        stack, _, count = line.rstrip().rpartition(" ")
        frames = stack.split(";")
        samples = int(count)
        total += samples
        for frame in set(frames):
            inclusive[frame] += samples
        own[frames[-1]] += samples
    for title, counter in (("inclusive", inclusive), ("own", own)):
        print(f"--- {title} (of {total} samples)")
        for frame, samples in counter.most_common(top):
            print(f"{100 * samples / total:5.1f}%  {frame[:150]}")


if __name__ == "__main__":
    main(sys.argv[1], *(int(a) for a in sys.argv[2:]))
