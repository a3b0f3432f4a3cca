"""The tests' real HTTP receiver (keep-alive, threaded) in a process of its own, so that receiving does not compete
with the sender for the interpreter lock.

    python -m bench.receiver_process   ->  prints "http://127.0.0.1:PORT"; answers "count" lines on stdin
"""

from __future__ import annotations

import sys
from urllib.parse import urlsplit

from tests.receiver import Receiver


def main() -> None:
    receiver = Receiver().start()  # no secret: signature checks would cost the same for every sender compared
    parts = urlsplit(receiver.url)
    print(f"{parts.scheme}://{parts.netloc}", flush=True)
    for line in sys.stdin:
        if line.strip() == "count":
            print(len(receiver.delivered_ids()), flush=True)
    receiver.stop()


if __name__ == "__main__":
    main()
